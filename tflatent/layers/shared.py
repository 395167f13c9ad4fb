"""Layers that share sub-layers with their model are saved as part of that model, never on their own."""


def part_of_a_model(layer, shared: str, model: str) -> NotImplementedError:
    """The error ``get_config`` of such a layer raises.

    A config of its own would deserialize the shared layers as separate copies and silently untie the
    weights (e.g. the input embedding and the tied output), so the layer has none: its model's config
    rebuilds it with the sharing intact (``model.save("*.keras")`` and ``keras.saving.load_model``).
    """
    return NotImplementedError(
        f"{type(layer).__name__} shares {shared} with its {model} and is saved as part of it: save the model "
        f"(model.save('*.keras') or model.save_weights), not the {type(layer).__name__} on its own")
