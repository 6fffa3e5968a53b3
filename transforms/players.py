"""The players of a run of a model-agnostic method (sampled Shapley, KernelSHAP, occlusion): which
elements of the method's inputs move together, from the record schema and the settings. No Beam.

Default players (attributions.players): one per scalar column; one per element of a list column
(a (k,) vector read from one column); square patches of `patch` pixels for an input of rank >= 2
read from one column (an image); one per position for an input attributed at a layer (a token
position). `groups` joins columns: every element of a group's columns is one player, named after
the group. Players are numbered in the order their first element appears.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

import numpy as np

from attributions.players import patch_players
from transforms.records import ModelInputSpec

__all__ = ["PlayerLayout", "player_layout", "run_player_layout", "default_patch"]


@dataclass(frozen=True)
class PlayerLayout:
    """players: one int32 array per method input (its shape, no batch axis), values 0..P-1;
    names: (P,) what each player is ('age', 'pixels[0:4, 4:8]', 'tokens@3', a group's name)."""

    players: tuple[np.ndarray, ...]
    names: tuple[str, ...]

    @property
    def count(self) -> int:
        return len(self.names)


def default_patch(shape: Sequence[int]) -> int:
    """An image's patch side when none is given: an eighth of its smaller side (at least 1 pixel),
    so an image has about 64 players."""
    return max(1, min(int(shape[0]), int(shape[1])) // 8)


def player_layout(inputs: Sequence[tuple[Optional[ModelInputSpec], tuple[int, ...]]], groups: Optional[Mapping[str, Sequence[str]]] = None,
                  patch: Optional[int] = None, layer_columns: Sequence[str] = ()) -> PlayerLayout:
    """The players of the method's inputs.

    inputs: per method input, (its model input's spec, its shape); the spec is None for an
    activation at a layer, whose (positions, width) rows are one player per position, named after
    layer_columns[i] (the source column of the i-th such input). groups: group name -> columns.
    patch: image patch side in pixels (None: default_patch per image).
    """
    groups = dict(groups or {})
    group_of = {column: name for name, columns in groups.items() for column in columns}
    known = {c.name for spec, _ in inputs if spec is not None for c in spec.columns} | set(layer_columns)
    unknown = sorted(set(group_of) - known)
    if unknown:
        raise ValueError(f"groups name column(s) {unknown} that the model does not read; the columns it reads are "
                         f"{sorted(known)}. Group only input columns.")
    units: list[list[str]] = []  # per input: the unit name of each flat element
    layer_index = 0
    for spec, shape in inputs:
        size = int(np.prod(shape, dtype=np.int64))
        if spec is None:  # activations at a layer: one unit per position
            column = layer_columns[layer_index] if layer_index < len(layer_columns) else f"layer{layer_index}"
            layer_index += 1
            positions = int(np.prod(shape[:-1])) if len(shape) >= 2 else 1  # (*positions, width): the last axis summed, as written
            units.append([group_of.get(column, f"{column}@{p}") for p in range(positions) for _ in range(size // positions)])
            continue
        if len(shape) >= 2 and len(spec.columns) == 1:  # an image (or any grid): patches
            column = spec.columns[0].name
            side = patch or default_patch(shape)
            grid = patch_players(tuple(shape), side).reshape(-1)
            across = -(-shape[1] // side)
            names = [f"{column}[{(g // across) * side}:{min((g // across + 1) * side, shape[0])}, "
                     f"{(g % across) * side}:{min((g % across + 1) * side, shape[1])}]" for g in range(int(grid.max()) + 1)]
            units.append([group_of.get(column, names[g]) for g in grid])
            continue
        names = []
        for column in spec.columns:
            width = column.attr_length or column.length
            if column.name in group_of:
                names += [group_of[column.name]] * width
            elif width == 1 and not column.is_list:
                names.append(column.name)
            else:
                names += [f"{column.name}[{i}]" for i in range(width)]
        if len(names) != size:
            raise ValueError(f"model input {spec.name!r} of shape {tuple(shape)} holds {size} values but its columns give {len(names)}; "
                             f"this input cannot be split into players (pass --groups to join its columns).")
        units.append(names)
    order = list(dict.fromkeys(name for names in units for name in names))
    number = {name: i for i, name in enumerate(order)}
    players = tuple(np.array([number[n] for n in names], dtype=np.int32).reshape(shape) for names, (_, shape) in zip(units, inputs))
    return PlayerLayout(players, tuple(order))


def run_player_layout(model_inputs: Sequence[ModelInputSpec], layer_shapes: Mapping[str, tuple[int, ...]],
                      groups: Optional[Mapping[str, Sequence[str]]] = None, patch: Optional[int] = None,
                      kept: Optional[Sequence[str]] = None) -> PlayerLayout:
    """The players of a run, as the launcher (for the manifest) and every worker (for the method)
    see them. layer_shapes: model input name -> the shape of its activation at a layer (one player
    per position: the shape without its last axis), in the method's order: the activations come
    first, then the inputs the upper part still reads, in the order `kept` names them (default
    the model's)."""
    by_name = {spec.name: spec for spec in model_inputs}
    kept = [spec.name for spec in model_inputs if spec.name not in layer_shapes] if kept is None else kept
    inputs = [(None, tuple(shape)) for shape in layer_shapes.values()]
    inputs += [(by_name[name], by_name[name].shape) for name in kept]
    return player_layout(inputs, groups, patch, tuple(by_name[name].columns[0].name for name in layer_shapes))
