"""The keys of a metrics record (no torch: the study driver builds its Parquet schema from them)."""

from __future__ import annotations

STABILITY_KEYS = (  # trainables/stability.py: the latest measure's values, NaN before the first
    "sharpness",  # λ_max of the Gauss-Newton matrix at the latest measured linearisation point
    "lr_sharpness",  # lr·sharpness/(1 + momentum): SGD's edge of stability is 2; NaN: Adam, GN
    "lr_sharpness_max",  # the largest lr_sharpness measured since the previous record
    "lin_gap",  # network loss − old linear model's loss at θ, at the latest measured update
)
MEASURE_KEYS = (
    "kernel_distance_init",  # S(K(θ_s), K₀): kernel change since initialisation
    "kernel_distance_prev",  # S(K(θ_s), K at the previous measure)
    "kernel_velocity",  # kernel_distance_prev per step
    "kernel_alignment",  # centred kernel–target alignment of K(θ_s)
    "param_change",  # ‖θ − θ₀‖ / ‖θ₀‖
    "lin_point_change",  # ‖θ_s − θ_s,prev‖ / ‖θ_s,prev‖ at the latest feature update
    *STABILITY_KEYS,
)
RECORD_KEYS = (
    "step", "feature_updates", "train_loss", "train_acc", "val_loss", "val_acc",
    "test_loss", "test_acc",
    "diverged", "elapsed_s", "batch_loss", "cg_iters",
    "peak_loss_ratio",  # the largest train_loss of the records so far / step 0's (inf: non-finite)
    "val_examples",  # validation examples of the trial (0: none), to state margins in examples
    *MEASURE_KEYS,
)  # fmt: skip
# One row per measured linearisation point (trainables.stability, results/phases/): the step t
# after which θ_s ← θ_t (the new phase trains from step t + 1), 0 for the initial θ_s = θ₀.
PHASE_KEYS = (
    "step",  # steps trained when θ_s ← θ; 0: the initial linearisation point
    "feature_updates",  # which update this is (0: the initial point)
    "sharpness",  # λ_max of the Gauss-Newton matrix at the new θ_s, on the stability batch
    "lr_sharpness",  # lr·sharpness/(1 + momentum); NaN for Adam and Gauss-Newton
    "lin_gap",  # loss_after − loss_before; NaN at the initial point and for plain and GN
    "loss_before",  # the old linear model's loss at θ, just before the update (NaN: none)
    "loss_after",  # the network's loss at θ just after it: the new linear model's at θ_s
)
