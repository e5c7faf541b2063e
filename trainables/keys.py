"""The keys of a metrics record (no torch: the study driver builds its Parquet schema from them)."""

from __future__ import annotations

MEASURE_KEYS = (
    "kernel_distance_init",  # S(K(θ_s), K₀): kernel change since initialisation
    "kernel_distance_prev",  # S(K(θ_s), K at the previous measure)
    "kernel_velocity",  # kernel_distance_prev per step
    "kernel_alignment",  # centred kernel–target alignment of K(θ_s)
    "param_change",  # ‖θ − θ₀‖ / ‖θ₀‖
    "lin_point_change",  # ‖θ_s − θ_s,prev‖ / ‖θ_s,prev‖ at the latest feature update
)
RECORD_KEYS = (
    "step", "feature_updates", "train_loss", "train_acc", "val_loss", "val_acc",
    "test_loss", "test_acc",
    "diverged", "elapsed_s", "batch_loss", "cg_iters", *MEASURE_KEYS,
)  # fmt: skip
