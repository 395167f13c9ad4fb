"""Trains a tiny JSB AF/AF under a strategy and checks it against one device (run by test_distribute.py).

``python distributed_flow.py STRATEGY RUN_DIR EVAL_LIMIT NETWORK [LOGICAL_CPUS]`` (a worker of
``multi_worker`` takes TF_CONFIG from the environment); NETWORK is ``lstm`` (the paper's) or
``transformer`` (self-attention in q(z|x), p(x|z) and the prior, compiled with XLA as the attention
configs compile it: each replica compiles its own step and its validation IS-NLL). It trains one epoch of two steps
with the IS-NLL callback on a validation set of EVAL_LIMIT chorales, then evaluates the same weights on
one device (the default strategy, per-replica batches) and prints one JSON line: the strategy's
validation loss and NLL, the one-device figures, and the replicas.
"""

import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


ATTENTION = ["model.inference_network=transformer", "model.emission_network=transformer",
             "model.prior_network=transformer", "model.attention_units=8", "model.attention_layers=1",
             "model.attention_heads=2", "model.attention_feed_forward_units=16",
             "train.jit_compile=true", "data.pad_to_multiple=4"]


def main(name, run_dir, eval_limit, network, logical_cpus=None):
    from tflatent.training import distribute
    strategy = distribute.make_strategy(name, int(logical_cpus) if logical_cpus else None)
    import tensorflow as tf

    from tflatent import config as config_lib
    from tflatent import data
    from tflatent.models.registry import build_model
    from tflatent.training.fit import train
    from tflatent.training.run_dir import RunDir

    overrides = ["model.embedding_size=8", "model.z_size=3", "model.hidden_size=8", "model.prior_rnn_units=8",
                 "model.hidden_flow_layers=2", "model.hidden_flow_units=6", "model.position_encoding=sinusoidal",
                 "model.position_encoding_size=8", "data.train_limit=12", f"data.eval_limit={eval_limit}",
                 "data.batch_size=2", "data.eval_batch_size=2", "train.epochs=1", "train.steps_per_epoch=2",
                 "train.nll_every=1", "train.nll_samples=4", "train.nll_chunk=3", "train.elbo_samples=2",
                 "train.verbose=0", f"train.distribute={name}", *(ATTENTION if network == "transformer" else [])]
    config = config_lib.load(os.path.join(REPO, "configs", "jsb_chorales_af_af_small.yaml"), overrides)
    run = RunDir(run_dir)
    summary = train(config, run, strategy)
    figures = {"replicas": summary["replicas"], "status": summary["status"],
               "val_nll": summary["last_epoch"]["val_nll"], "val_loss": summary["last_epoch"]["val_loss"]}
    own = run if distribute.is_chief(strategy) else RunDir(
        os.path.join(run_dir, "workers", str(strategy.cluster_resolver.task_id)))
    # The same weights on one device, on per-replica batches of the validation split (every worker
    # evaluates, so that none leaves the cluster while another still runs).
    bundle = data.load_dataset(config.data, config.train.seed)
    with tf.distribute.get_strategy().scope():
        model = build_model(config, bundle)
    model.load_weights(own.checkpoint("latest"))
    valid = bundle.batches("valid", False, batch_size=config.data.eval_batch_size)
    # As the run validated: XLA draws other noise than TensorFlow's kernels.
    result = model.evaluate_nll(valid, num_samples=config.train.nll_samples, chunk=config.train.nll_chunk,
                                jit_compile=config.train.jit_compile)
    model.compile(jit_compile=config.train.jit_compile)
    model.beta.assign(summary["last_epoch"]["beta"])  # the β the run validated at
    figures.update(one_nll=result["nll"], sequences=result["sequences"],
                   one_loss=model.evaluate(valid, verbose=0, return_dict=True)["loss"])
    print(json.dumps(figures))


if __name__ == "__main__":
    sys.path.insert(0, REPO)
    main(*sys.argv[1:])
