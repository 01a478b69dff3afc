"""The run report's document: sections of paragraphs, tables, charts and code, rendered as one
self-contained HTML page (no script, nothing fetched, every text escaped), as Markdown, or in a notebook.
``run_report`` decides what the sections say."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field

HTML_NAME = "report.html"


@dataclass
class Table:
    head: list[str]
    rows: list[list[str]]
    wide: bool = False  # long texts (answers): fixed columns, top aligned


@dataclass
class Image:
    alt: str
    png: bytes


@dataclass
class Code:
    text: str
    caption: str = ""


Block = str | Table | Image | Code  # a str is a paragraph


@dataclass
class Section:
    title: str
    blocks: list[Block] = field(default_factory=list)


# -- rendering -------------------------------------------------------------------------------------------

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1200px;margin:0 auto;padding:1.5rem}
nav a{margin-right:.9rem}
section{background:#fff;border:1px solid #ddd;border-radius:6px;padding:.4rem 1rem 1rem;margin:1rem 0}
table{border-collapse:collapse;margin:.6rem 0;width:auto}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:left;vertical-align:top;white-space:pre-wrap}
th{background:#f0f0f0}
table.wide{width:100%;table-layout:fixed}
table.wide td{word-break:break-word;font-size:13px}
table.wide th:first-child{width:2.5rem}
pre{background:#f4f4f4;padding:.6rem;overflow:auto;white-space:pre-wrap;word-break:break-word;font-size:12.5px}
img{max-width:100%;display:block;margin:.6rem 0}
figcaption,.caption{color:#555;font-size:13px}
"""
_CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def _slug(title: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")


def render_html(title: str, sections: list[Section]) -> str:
    """One self-contained page: no script, nothing fetched (the CSP says so too), every text escaped."""
    esc = html.escape
    nav = " ".join(f'<a href="#{_slug(s.title)}">{esc(s.title)}</a>' for s in sections)
    out = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<link rel="icon" href="data:,"><title>{esc(title)}</title><style>{CSS}</style></head>',
        f"<body><main><h1>{esc(title)}</h1><nav>{nav}</nav>",
    ]
    for section in sections:
        out.append(f'<section id="{_slug(section.title)}"><h2>{esc(section.title)}</h2>')
        out += [_html_block(block) for block in section.blocks]
        out.append("</section>")
    out.append("</main></body></html>\n")
    return "\n".join(out)


def _html_block(block: Block) -> str:
    esc = html.escape
    if isinstance(block, str):
        return f"<p>{esc(block)}</p>"
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode("ascii")
        alt = esc(block.alt)
        return f'<figure><img alt="{alt}" src="data:image/png;base64,{data}"><figcaption>{alt}</figcaption></figure>'
    if isinstance(block, Code):
        caption = f'<div class="caption">{esc(block.caption)}</div>' if block.caption else ""
        return f"{caption}<pre>{esc(block.text)}</pre>"
    head = "".join(f"<th>{esc(h)}</th>" for h in block.head) if any(block.head) else ""
    rows = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows)
    cls = ' class="wide"' if block.wide else ""
    return f"<table{cls}>" + (f"<thead><tr>{head}</tr></thead>" if head else "") + f"<tbody>{rows}</tbody></table>"


def render_markdown(title: str, sections: list[Section]) -> str:
    """The same sections as Markdown text and tables; text is escaped, so no viewer renders a chat's markup."""
    out = [f"# {_md(title)}", ""]
    for section in sections:
        out += [f"## {_md(section.title)}", ""]
        for block in section.blocks:
            out += [*_md_block(block), ""]
    return "\n".join(out).rstrip() + "\n"


def _md_block(block: Block) -> list[str]:
    if isinstance(block, str):
        return [_md(block)]
    if isinstance(block, Image):
        return [f"_Chart (in {HTML_NAME}): {_md(block.alt)}_"]
    if isinstance(block, Code):
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", block.text)), default=0))
        return ([f"_{_md(block.caption)}_", ""] if block.caption else []) + [fence, block.text, fence]
    head = [_md_cell(h) or " " for h in block.head]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    return lines + ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]


def _md(text: str) -> str:
    """Markdown viewers pass HTML through: with every '<' escaped no chat can open a tag."""
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _md_cell(text: str) -> str:
    return _md(text).replace("|", "\\|").replace("\r", "").replace("\n", "<br>")


def display(sections: list[Section]) -> None:
    """The sections as a notebook's rich output: a Markdown heading and tables, charts as PNG images."""
    from IPython.display import Image as PNG
    from IPython.display import Markdown
    from IPython.display import display as show

    for section in sections:
        show(Markdown(f"### {_md(section.title)}"))
        for block in section.blocks:
            if isinstance(block, Image):
                show(PNG(data=block.png, format="png"))
            else:
                show(Markdown("\n".join(_md_block(block))))
