"""``hwtune recipes`` and ``hwtune recipes show NAME``: the bundled search-space recipes (``models/*.toml``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from hwtune.cli._output import print_json, print_table

if TYPE_CHECKING:  # pragma: no cover
    from hwtune.space import SearchSpace

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "recipes",
        help="list bundled search-space recipes (for hwtune tune), or show one",
        description="The bundled recipes: what `hwtune tune RECIPE` searches. A recipe is a TOML file; "
        "`hwtune tune path/to/my-recipe.toml` takes your own.",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    inner = p.add_subparsers(dest="recipes_command", metavar="show")
    show = inner.add_parser("show", help="show one recipe's search space (bundled name or path to a .toml)")
    show.add_argument("recipe", metavar="NAME", help="recipe name (hwtune recipes) or path to a .toml")
    show.add_argument("--json", action="store_true", help="the recipe as JSON (the TOML layout)")
    p.set_defaults(func=run)
    return p


def _summary(space: SearchSpace) -> dict[str, Any]:
    return {
        "name": space.name,
        "family": space.family,
        "dataset": space.dataset,
        "input": list(space.input_shape),
        "classes": space.num_classes,
        "stages": space.num_stages,
        "precisions": list(space.precision_choices),
        "candidates": int(space.size()),
        "epochs": space.train.epochs,
        "description": space.description,
    }


def run(args: argparse.Namespace) -> int:
    from hwtune.space import SearchSpace, list_recipes

    if getattr(args, "recipes_command", None) == "show":
        space = SearchSpace.from_recipe(args.recipe)
        if args.json:
            print_json({**space.to_dict(), "candidates": int(space.size()), "path": str(space.path)})
            return 0
        s = _summary(space)
        rows = [
            ("name", s["name"]), ("family", s["family"]), ("dataset", s["dataset"]),
            ("input", "x".join(str(d) for d in s["input"])), ("classes", s["classes"]),
            ("stages", s["stages"]), ("precisions", ", ".join(s["precisions"])),
            ("candidates", f"{s['candidates']:,}"), ("epochs per trial", f"{s['epochs']:g}"),
        ]
        rows += [(f"knob {p.name}", ", ".join(str(c) for c in p.choices)) for p in space.params if len(p.choices) > 1]
        rows += [("file", str(space.path)), ("description", s["description"] or "-")]
        print_table(("field", "value"), rows)
        return 0
    spaces = [SearchSpace.from_recipe(name) for name in list_recipes()]
    if args.json:
        print_json([_summary(s) for s in spaces])
        return 0
    print_table(
        ("name", "family", "dataset", "input", "precisions", "candidates", "description"),
        [
            (s.name, s.family, s.dataset, "x".join(str(d) for d in s.input_shape), ",".join(s.precision_choices),
             f"{s.size():,}", _short(s.description))
            for s in spaces
        ],
    )
    return 0


def _short(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 3].rstrip() + "..."
