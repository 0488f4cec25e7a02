"""Self-supervised learning core: encoders, augmentations, losses, checkpoints.

Pure torch (no Ray): everything here runs in a unit test, in one process, or
inside DDP workers, on CPU or GPU.
"""

from antssl.ssl.augment import Augment, AugmentConfig, two_views
from antssl.ssl.backbones import BACKBONES, ResNet, build_backbone
from antssl.ssl.checkpoint import load_checkpoint, load_training_state, read_meta, save_checkpoint
from antssl.ssl.distributed import (
    all_gather_sizes,
    all_reduce_mean,
    gather_with_grad,
    is_distributed,
    rank,
    world_size,
)
from antssl.ssl.model import (
    SPEC_KEYS,
    Prototypes,
    SSLModel,
    build_model,
    build_model_from_spec,
    model_spec,
)
from antssl.ssl.objectives import (
    OBJECTIVES,
    SimCLRLoss,
    VICRegLoss,
    build_objective,
    nt_xent_loss,
    sinkhorn_codes,
    swav_loss,
    vicreg_loss,
)
from antssl.ssl.step import augment_config, cross_scene_neighbours, forward_step, lr_lambda
from antssl.ssl.texture import texture_loss, texture_target_dim, texture_targets
from antssl.ssl.whiten import Whitening, fit_whitening

__all__ = [
    "BACKBONES",
    "OBJECTIVES",
    "SPEC_KEYS",
    "Augment",
    "AugmentConfig",
    "Prototypes",
    "ResNet",
    "SSLModel",
    "SimCLRLoss",
    "VICRegLoss",
    "Whitening",
    "all_gather_sizes",
    "all_reduce_mean",
    "augment_config",
    "build_backbone",
    "build_model",
    "build_model_from_spec",
    "build_objective",
    "cross_scene_neighbours",
    "fit_whitening",
    "forward_step",
    "gather_with_grad",
    "is_distributed",
    "load_checkpoint",
    "load_training_state",
    "lr_lambda",
    "model_spec",
    "nt_xent_loss",
    "rank",
    "read_meta",
    "save_checkpoint",
    "sinkhorn_codes",
    "swav_loss",
    "texture_loss",
    "texture_target_dim",
    "texture_targets",
    "two_views",
    "vicreg_loss",
    "world_size",
]
