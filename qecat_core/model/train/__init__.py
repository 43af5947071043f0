"""Training: the stages (graph, text, align, joint), their losses, recipes and the text-table run.

Takes labelled structures (``.aselmdb`` with ``e_ads``, eV) or text tables; gives model folders
(:mod:`qecat_core.model.checkpoint`).

* ``stages``      ``train_stage(stage, train_path, val_path, out_dir, config)``: resumable, seeded,
                  early-stopped on a validation split
* ``losses``      L1/MSE (optionally weighted), InfoNCE, distillation, pair loss
* ``recipes``     YAML recipes (``TrainConfig`` per stage) and ``run_recipe``
* ``text_table``  the text channel on a table of configuration strings, with baselines
"""
