"""Stage 3, the QE-Catalytic model: graph channel (eSCN-MD), language channel (Qwen2) and their fusion.

Takes OC20-tagged structures and/or configuration strings; gives relaxed adsorption energies (eV).
Lengths in Å, OC20 tags (0 subsurface, 1 surface, 2 adsorbate). Heavy dependencies are imported by
the submodules, not here.

* ``tokenizer``  byte-level BPE for configuration strings and CIF text (transformers tokenizer folder)
* ``graph``      backbone registry (``escn_md``; ``equiformer_v2`` raises), structure cropping, pooling
* ``lm``         tiny Qwen2ForCausalLM from scratch, or any local Qwen checkpoint (``load_lm``)
* ``normalizer`` E_ads normalisation (mean/std, per-adsorbate and per-element references)
* ``elements``   the chemical elements a model was trained on; inputs outside them are refused
* ``fusion``     ``QECatModel``: modes fused | text | graph
* ``data``       structure / text datasets, ``Collator`` -> ``Batch``
* ``checkpoint`` ``save_model`` / ``load_model`` (model folders, by path)
* ``device``     ``auto | cpu | cuda | cuda:N`` and ``fp32 | bf16 | fp16``, resolved once with one-line errors
* ``train/``     the training stages, losses, typed options (``TrainConfig``) and recipes
* ``evaluate``   MAE, within 0.1 eV, configuration discrimination (Spearman per system), parity plots
* ``report``     the evaluation table (graph / text unaligned / text aligned / fused per split)
* ``predict``    ``predict_structures`` / ``predict_texts`` -> DataFrame(sid, e_ads_pred, mode, model_id
                 [, unseen_elements with ``allow_unseen_elements``])
"""
