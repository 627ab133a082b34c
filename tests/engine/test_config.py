"""config/default.toml and the engine's dataclasses say the same, key for key."""

from __future__ import annotations

import dataclasses

from engine.config import (
    DEFAULT_CONFIG,
    EngineConfig,
    OutputSettings,
    WeightsSettings,
    engine_config,
    read_toml,
)
from engine.jobs import ImageLimits, TransferSettings

TABLES = {"engine": TransferSettings, "limits": ImageLimits, "weights": WeightsSettings,
          "output": OutputSettings}


def test_default_toml_engine_tables_match_the_dataclasses():
    raw = read_toml(DEFAULT_CONFIG)
    for table, cls in TABLES.items():
        assert list(raw[table]) == [f.name for f in dataclasses.fields(cls)], f"[{table}]: same keys, same order"
    assert engine_config(raw) == EngineConfig(TransferSettings(), ImageLimits(), WeightsSettings(),
                                              OutputSettings())


def test_every_engine_key_has_a_comment_above_it():
    lines = DEFAULT_CONFIG.read_text().splitlines()
    table = None
    for i, line in enumerate(lines):
        if line.startswith("["):
            table = line.strip("[]")
        elif line and not line.startswith("#") and table in TABLES:
            assert lines[i - 1].startswith("# "), f"[{table}] has no comment above {line!r}"
