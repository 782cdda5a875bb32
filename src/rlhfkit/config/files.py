"""Configuration files on disk: reading one as YAML data, and writing a resolved configuration.

Reading refuses, each in one line that names the file, what a config file cannot be: a folder, a
missing path, something larger than a config file could be, UTF-16/UTF-32 or binary data, and text
that is not YAML (with the line and column of the problem). A UTF-8 byte-order mark is accepted.
"""

from __future__ import annotations

import codecs
import os
import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from rlhfkit.errors import ConfigError
from rlhfkit.io import write_text_atomic

MAX_CONFIG_BYTES = 16 * 2**20
"""A config file is a few kilobytes; anything over this is the wrong file (a model, a dataset)."""


def read_config_file(path: Path) -> Any:
    """The YAML data in ``path`` (None for an empty file), or a ConfigError that says what is wrong with it."""
    label = f"config file {str(path)!r}"
    return _parse_yaml(label, _decode(label, _read_bytes(label, path)))


def _read_bytes(label: str, path: Path) -> bytes:
    if path.is_dir():
        inside = path / "config.yaml"
        hint = f"; a run folder keeps its configuration in {str(inside)!r}" if inside.is_file() else ""
        raise ConfigError(f"{label} is a folder, not a YAML file{hint}. Give the path of a .yaml file to --config.")
    if not path.exists():
        raise ConfigError(f"{label} does not exist; check the path given to --config.")
    try:
        with open(path, "rb") as f:  # a pipe (--config <(...)) has no size, so read at most one byte too many
            data = f.read(MAX_CONFIG_BYTES + 1)
    except OSError as e:
        raise ConfigError(f"{label} could not be read ({e.strerror or e}); check its permissions.") from None
    if len(data) > MAX_CONFIG_BYTES:
        size = os.path.getsize(path) if path.is_file() else len(data)
        raise ConfigError(f"{label} is {size / 2**20:.1f} MiB, too large for a config file (at most "
                          f"{MAX_CONFIG_BYTES // 2**20} MiB); check the path given to --config.")  # fmt: skip
    return data


def _decode(label: str, data: bytes) -> str:
    """UTF-8 text (a UTF-8 byte-order mark is dropped); UTF-16/32 and binary files are refused by name."""
    for encoding, marks in (("UTF-32", (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)),
                            ("UTF-16", (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))):  # fmt: skip
        if data.startswith(marks):
            raise ConfigError(f"{label} is {encoding} text (it starts with a {encoding} byte-order mark), not UTF-8 "
                              f"text YAML; re-save it as UTF-8 (e.g. `iconv -f {encoding} -t UTF-8 FILE > NEW.yaml`).")  # fmt: skip
    if b"\x00" in data:
        raise ConfigError(f"{label} contains NUL bytes, so it is binary or UTF-16/UTF-32 text, not UTF-8 text YAML; "
                          "check the path, and if it is text, re-save it as UTF-8.")  # fmt: skip
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{label} is not UTF-8 text YAML (byte 0x{data[e.start]:02x} at offset {e.start} is not "
                          "UTF-8); check the path, and if it is text, re-save it as UTF-8.") from None  # fmt: skip


def _parse_yaml(label: str, text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.reader.ReaderError as e:
        raise ConfigError(f"{label} contains the control character {_char(e.character)} (character {e.position + 1}), "
                          "so it is not UTF-8 text YAML; check the path.") from None  # fmt: skip
    except yaml.MarkedYAMLError as e:
        raise ConfigError(f"{label} is not valid YAML: {_yaml_problem(e)}. Check the indentation and quoting "
                          "there.") from None  # fmt: skip
    except yaml.YAMLError as e:
        raise ConfigError(f"{label} is not valid YAML: {first_line(str(e))}.") from None
    except TAGGED_VALUE_ERRORS as e:
        raise ConfigError(f"{label} is not valid YAML: {tagged_value_problem(text, e)}.") from None
    except RecursionError:
        raise ConfigError(f"{label} is nested too deeply to be a config file.") from None


TAGGED_VALUE_ERRORS = (ValueError, TypeError, AttributeError, IndexError, KeyError)
"""What PyYAML raises, instead of a YAMLError, for a malformed value with an explicit tag (`!!float`, `!!bool maybe`)."""


def tagged_value_problem(text: str, e: Exception) -> str:
    """Why a value with an explicit tag could not be built, naming the tags in ``text``."""
    tags = sorted(set(re.findall(r"!![\w/:.-]+", text)))
    where = f"; check the values tagged {', '.join(tags)}" if tags else ""
    return f"a tagged value could not be read ({type(e).__name__}: {first_line(str(e))}){where}"


def _char(character: int | str) -> str:
    return f"#x{character if isinstance(character, int) else ord(character):02x}"


def _yaml_problem(e: yaml.MarkedYAMLError) -> str:
    mark = e.problem_mark or e.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    context = f" ({e.context})" if e.context else ""
    return f"{e.problem or 'unreadable'}{where}{context}"


def first_line(text: str) -> str:
    """The first line of an error's text, without a final period (to end a sentence of our own)."""
    lines = str(text).strip().splitlines()
    return lines[0].rstrip(".") if lines else "unknown error"


# --------------------------------------------------------------------------------------------------
# Writing


def to_yaml(cfg: Any) -> str:
    """The config as YAML text (the resolved form written next to a run's outputs)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Any, folder: str | os.PathLike, name: str = "config.yaml") -> Path:
    """Write the resolved config into ``folder`` atomically (temp file + rename)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(folder / name, to_yaml(cfg))
