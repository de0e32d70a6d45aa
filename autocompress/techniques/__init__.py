"""What is done to the model: pruning (units, heads), sparsity, block dropping, quantization,
embedding tables, BatchNorm folding and recalibration, distillation, fine-tuning and its scopes;
the importance criteria pruning ranks by (``importance``).
"""

from __future__ import annotations

from autocompress.techniques.distill import (
    DistillLoss,
    TeacherCache,
    fingerprint,
    kd_loss,
    unused_globals,
)
from autocompress.techniques.drop import (
    DroppedBlock,
    drop_blocks_,
    find_blocks,
    live,
    resolve_blocks,
)
from autocompress.techniques.embedding import QuantEmbedding, quantizes_rows
from autocompress.techniques.finetune import EpochCallback, finetune_
from autocompress.techniques.fold import (
    concat_folds,
    fold_batchnorm,
    fold_concat_batchnorm_,
    foldable_pairs,
    unfolded_skeleton,
)
from autocompress.techniques.importance import (
    IMPORTANCES,
    Importance,
    check_importance,
    get_importance,
    register_importance,
    unregister_importance,
)
from autocompress.techniques.prune import prune_, prune_records
from autocompress.techniques.quantize import (
    ActivationQuant,
    activation_qparams,
    dequantize,
    fake_quant,
    pack_codes,
    qmax,
    quantize_weight,
    unpack_codes,
)
from autocompress.techniques.recalibrate import (
    after_finetuning,
    after_pruning,
    merge_records,
    recalibrate_bn_,
    stuck_norms,
    tracked_norms,
)
from autocompress.techniques.scope import (
    FEATURE_MEANING,
    FINETUNE_MEANING,
    auto_feature_layers,
    changed_layers,
    resolve_quant_scopes,
    select_parameters,
    trainable_modules,
    trained_count,
    with_activations,
)
from autocompress.techniques.sparsify import (
    achieved_sparsity,
    decode_sparse,
    encode_sparse,
    payload_bytes,
    resolve_sparsity,
    sparsify_,
    summary,
)

__all__ = [
    "IMPORTANCES",
    "ActivationQuant",
    "DistillLoss",
    "DroppedBlock",
    "EpochCallback",
    "FEATURE_MEANING",
    "FINETUNE_MEANING",
    "Importance",
    "QuantEmbedding",
    "TeacherCache",
    "achieved_sparsity",
    "activation_qparams",
    "after_finetuning",
    "after_pruning",
    "auto_feature_layers",
    "changed_layers",
    "check_importance",
    "concat_folds",
    "decode_sparse",
    "dequantize",
    "drop_blocks_",
    "encode_sparse",
    "fake_quant",
    "find_blocks",
    "finetune_",
    "fingerprint",
    "fold_batchnorm",
    "fold_concat_batchnorm_",
    "foldable_pairs",
    "get_importance",
    "kd_loss",
    "live",
    "merge_records",
    "pack_codes",
    "payload_bytes",
    "prune_",
    "prune_records",
    "qmax",
    "quantize_weight",
    "quantizes_rows",
    "recalibrate_bn_",
    "register_importance",
    "resolve_blocks",
    "resolve_quant_scopes",
    "resolve_sparsity",
    "select_parameters",
    "sparsify_",
    "stuck_norms",
    "summary",
    "tracked_norms",
    "trainable_modules",
    "trained_count",
    "unfolded_skeleton",
    "unregister_importance",
    "unpack_codes",
    "unused_globals",
    "with_activations",
]
