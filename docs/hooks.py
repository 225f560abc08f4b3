"""MkDocs hooks (mkdocs.yml `hooks:`): the pages made from the code and the results.

- `index.md`: the README, its links pointed into the site, and three of its sections
  as pages of their own (`README_PAGES`);
- `methods/<name>.md`, one per method: its module docstring (paper, loss,
  deviations), its hyperparameters from its `Config` (type, default, allowed
  values, doc), its tuned rows (`cljax/tuned/`), and its rows of the committed
  reproduction tables (`experiments/results/*.json`);
- `tables/<file>.md`: every committed table of `experiments/results/`, and an
  index of them.

Links from the hand-written pages to `../experiments/results/...` go to
`tables/...`; links to source files become their path in code type (the site
has no copy of the code but the API reference).
"""

from __future__ import annotations

import dataclasses
import json
import re
import typing
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "experiments" / "results"


def _rewrite(markdown: str, up: str, to_root: str = "") -> str:
    """Points links at the site's copies: `up` is how the page reached the repository's root
    (`../` from docs/, `` from the README); `to_root` how the new page reaches the site's."""
    results = re.escape(f"{up}experiments/results/")
    markdown = re.sub(rf"\]\({results}\)", f"]({to_root}tables/index.md)", markdown)
    markdown = re.sub(rf"\]\({results}([^)]+)\)", rf"]({to_root}tables/\1)", markdown)
    if up == "":
        markdown = re.sub(r"\]\(docs/([^)]+)\)", rf"]({to_root}\1)", markdown)
    markdown = re.sub(rf"\]\({re.escape(up)}README\.md", f"]({to_root}index.md", markdown)
    # a link to any other file of the repository: its path, in code type
    markdown = re.sub(
        rf"\[([^\]]+)\]\({re.escape(up)}((?:cljax|experiments|examples|tests|\.ci)[^)]*|[A-Z][\w.-]*)\)",
        r"\1 (`\2`)",
        markdown,
    )
    return markdown


def _kind_name(tp) -> str:
    return getattr(tp, "__name__", str(tp)).replace("typing.", "")


def hparams_table(config_cls) -> str:
    from cljax.core.config import _bounds_text

    hints = typing.get_type_hints(config_cls)
    rows = ["| name | type | default | allowed | what it is |", "|---|---|---|---|---|"]
    for f in dataclasses.fields(config_cls):
        allowed = _bounds_text(f.metadata) or "any"
        kind = str(hints[f.name]).replace("typing.", "").replace("<class '", "").replace("'>", "")
        rows.append(f"| `{f.name}` | {kind} | `{f.default!r}` | {allowed} | {f.metadata['doc']} |")
    return "\n".join(rows)


def tuned_table(name: str) -> str:
    from cljax import tuned

    table = tuned.table(name)
    if not table:
        return "None: the defaults above (`cljax --list-hparams` says so at run time)."
    rows = ["| benchmark | buffer | source | values |", "|---|---|---|---|"]
    for benchmark, by_buffer in sorted(table.items()):
        for buffer, values in sorted(by_buffer.items(), key=lambda kv: kv[0] or 0):
            values = dict(values)
            source = values.pop("source")
            text = ", ".join(f"{k}={v}" for k, v in values.items())
            rows.append(f"| {benchmark} | {buffer or '-'} | {source} | {text} |")
    return "\n".join(rows)


def reproduced_rows(name: str) -> str:
    """This method's rows of the committed reproduction tables."""
    rows = []
    for path in sorted(RESULTS.glob("*.json")):
        try:
            table = json.loads(path.read_text())
        except ValueError:
            continue
        if not isinstance(table, dict):
            continue
        for key, row in table.items():
            if not isinstance(row, dict) or row.get("method") != name:
                continue
            for setting, stat in (row.get("final_average_accuracy") or {}).items():
                rows.append(
                    f"| [{path.stem}](../tables/{path.stem}.md) | {key} | {row.get('benchmark')} "
                    f"| {setting} | {stat['mean']:.2f} +- {stat['std']:.2f} | {len(row['seeds'])} |"
                )
    if not rows:
        return "None committed yet."
    head = ["| table | row | benchmark | setting | ours (mean +- std) | seeds |"]
    return "\n".join([*head, "|---|---|---|---|---|---|", *rows])


def method_page(name: str) -> str:
    from cljax import methods

    module = methods.get(name)
    doc = (module.__doc__ or "").strip()
    title, _, body = doc.partition("\n")
    return "\n\n".join(
        [
            f"# `{name}`",
            title,
            body.strip(),
            "## Hyperparameters",
            f"From `{module.__name__}.Config`; set any with `--set name=value`.",
            hparams_table(module.Config),
            "## Tuned settings",
            f"`cljax/tuned/{name}.py`: what a run on that benchmark starts from.",
            tuned_table(name),
            "## Reproduction rows",
            "Final average accuracy of the committed tables' rows that ran this method "
            "(the tables say against which published number).",
            reproduced_rows(name),
        ]
    )


def _generated(config, path: str, text: str) -> File:
    return File.generated(config, path, content=text)


def on_config(config):
    from cljax import methods

    for entry in config["nav"]:
        if isinstance(entry, dict) and "Methods" in entry:
            entry["Methods"] = [
                *entry["Methods"],
                *({n: f"methods/{n}.md"} for n in methods.names()),
            ]
    return config


# README sections that are also pages of their own: (heading, page, title)
README_PAGES = (
    ("## Running a benchmark", "benchmarks.md", "Benchmarks and settings"),
    ("## Using the pieces in your own JAX code", "composing.md", "Using the pieces"),
    ("## Scaling up", "scaling.md", "Scaling up"),
)


def readme_section(readme: str, heading: str) -> str:
    """The README's section under `heading` (to the next `## `), without the heading."""
    start = readme.index(heading + "\n") + len(heading) + 1
    end = readme.find("\n## ", start)
    return readme[start : end if end >= 0 else len(readme)]


def on_files(files, config):
    from cljax import methods

    readme = (ROOT / "README.md").read_text()
    files.append(_generated(config, "index.md", _rewrite(readme, "")))
    for heading, page, title in README_PAGES:
        text = f"# {title}\n\n(From the README.)\n" + readme_section(readme, heading)
        files.append(_generated(config, page, _rewrite(text.replace("\n### ", "\n## "), "")))
    for name in methods.names():
        files.append(_generated(config, f"methods/{name}.md", method_page(name)))
    listing = ["# Committed tables", "", "Every table in `experiments/results/`.", ""]
    for path in sorted(RESULTS.glob("*.md")):
        text = _rewrite(path.read_text(), "../../", "../")
        files.append(_generated(config, f"tables/{path.name}", text))
        first = text.splitlines()[0].lstrip("# ") if text else path.stem
        listing.append(f"- [{path.stem}]({path.name}): {first}")
    files.append(_generated(config, "tables/index.md", "\n".join(listing) + "\n"))
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.generated_by is None:  # hand-written pages of docs/
        return _rewrite(markdown, "../")
    return markdown
