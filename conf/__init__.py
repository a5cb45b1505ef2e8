"""esmeta's Hydra configs, shipped as the package `esmeta.conf`. Hydra imports it before it reads a config, so this
registers the resolver conf/config.yaml names its job directories with: ${esmeta_unnamed_overrides:}, the override
keys job names leave out (`esmeta.roles.unnamed_overrides`, derived from each setting's declared role)."""

from omegaconf import OmegaConf

from esmeta.roles import unnamed_overrides

OmegaConf.register_new_resolver("esmeta_unnamed_overrides", unnamed_overrides, replace=True)
