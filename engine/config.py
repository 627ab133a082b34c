"""Load settings: config/default.toml, then a user's file over it (stdlib only).

The dataclasses in engine.jobs (and the two below) hold the defaults; the TOML
only maps onto them. Unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from engine.jobs import (
    OUTPUT_FORMATS,
    OUTPUT_QUALITY,
    ImageLimits,
    TransferSettings,
    settings_from_mapping,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "config" / "default.toml"


@dataclass(frozen=True)
class WeightsSettings:
    source: str = "auto"
    models_dir: str = "models"
    random_seed: int = 0

    def models_path(self) -> Path:
        path = Path(self.models_dir)
        return path if path.is_absolute() else PROJECT_ROOT / path


@dataclass(frozen=True)
class OutputSettings:
    format: str = "png"
    quality: int = OUTPUT_QUALITY

    def __post_init__(self) -> None:
        if self.format not in OUTPUT_FORMATS:
            raise ValueError(f"output format must be one of {', '.join(OUTPUT_FORMATS)}")
        if not 1 <= self.quality <= 95:
            raise ValueError("output quality must be between 1 and 95")


@dataclass(frozen=True)
class EngineConfig:
    transfer: TransferSettings
    limits: ImageLimits
    weights: WeightsSettings
    output: OutputSettings


class ConfigError(ValueError):
    pass


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        # Layer tables replace rather than merge: a user listing style layers means those.
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping) and not key.endswith("_layers"):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path} is not valid TOML: {e}") from None


def load_raw(user_path: Path | None = None) -> dict[str, Any]:
    """The default file with the user's file (if any) merged over it."""
    raw = read_toml(DEFAULT_CONFIG)
    if user_path is not None:
        raw = deep_merge(raw, read_toml(Path(user_path)))
    return raw


def map_dataclass(cls: type, table: Mapping[str, Any], section: str) -> Any:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise ConfigError(f"[{section}] unknown setting(s): {', '.join(unknown)}")
    try:
        return cls(**table)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[{section}] {e}") from None


def engine_config(raw: Mapping[str, Any]) -> EngineConfig:
    try:
        transfer = settings_from_mapping(raw.get("engine", {}))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"[engine] {e}") from None
    return EngineConfig(
        transfer=transfer,
        limits=map_dataclass(ImageLimits, raw.get("limits", {}), "limits"),
        weights=map_dataclass(WeightsSettings, raw.get("weights", {}), "weights"),
        output=map_dataclass(OutputSettings, raw.get("output", {}), "output"),
    )


def load_engine_config(user_path: Path | None = None) -> EngineConfig:
    return engine_config(load_raw(user_path))


__all__ = [
    "ConfigError", "EngineConfig", "OutputSettings", "WeightsSettings",
    "load_engine_config", "load_raw", "engine_config", "deep_merge", "replace",
]  # fmt: skip
