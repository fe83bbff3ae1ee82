"""Where and how the Trainer trains: the tf.distribute strategy built in the training process (strategies.py), and
the local processes some strategies need (launcher.py, cluster.py, worker.py), their TF_CONFIG (tf_config.py), the
Trainer's arguments handed between them (fn_args.py) and their network isolation (network.py)."""
