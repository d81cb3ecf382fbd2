"""Foreign application descriptions to Marina packages.

One module per format (`compose`, `pmx`, `zapp`), each a `Translator`
(see `base`); `translate` detects the format, reads the file safely and
builds the package through `building`, the same way for every format.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from catalog.errors import Conflict, NotFound
from catalog.packages import get_package, save_package
from catalog.translators.base import (
    Source,
    SourceProblem,
    SourceRejected,
    TranslationWarning,
    Translator,
    Warnings,
)
from catalog.translators.building import Translation, build_package
from catalog.translators.compose import ComposeTranslator
from catalog.translators.pmx import PmxTranslator
from catalog.translators.zapp import ZappTranslator

if TYPE_CHECKING:  # only in annotations: `marina package lint` and `import` load no etcd client
    from catalog.store import Store

TRANSLATORS: dict[str, Translator] = {
    t.format: t for t in (ComposeTranslator(), PmxTranslator(), ZappTranslator())
}

__all__ = [
    "TRANSLATORS",
    "Source",
    "SourceProblem",
    "SourceRejected",
    "Translation",
    "TranslationWarning",
    "Translator",
    "import_package",
    "translate",
]


def translate(source: Source, *, fmt: str | None = None, name: str | None = None) -> Translation:
    """The package `source` describes, and what did not carry over.

    `fmt` names the format; without it, the file's ending decides, then its
    content. `SourceRejected` (a 400) names every problem and its line.
    """
    if fmt is not None and fmt not in TRANSLATORS:
        raise SourceRejected(
            source.file,
            [SourceProblem("format", f"must be one of {', '.join(TRANSLATORS)}", fmt)],
        )
    translator = TRANSLATORS[fmt] if fmt else _by_suffix(source.file)
    if translator is None:
        translator = _by_content(source)
    document = translator.parse(source)
    if fmt is None and not translator.recognises(document.data):
        recognised = [t for t in TRANSLATORS.values() if t.recognises(document.data)]
        # Nothing recognised: the first guess reads it and names what is missing.
        translator = recognised[0] if recognised else translator
    warnings = Warnings(source.file)
    app = translator.read(source, document, warnings)
    return build_package(
        app, fmt=translator.format, source=source, document=document, warnings=warnings, name=name
    )


def _by_suffix(file: str) -> Translator | None:
    lowered = Path(file).name.lower()
    for translator in TRANSLATORS.values():
        if translator.format != "compose" and lowered.endswith(translator.suffixes):
            return translator
    return None


def _by_content(source: Source) -> Translator:
    """YAML files may be compose files or Panamax templates: the content says."""
    stripped = source.text.lstrip()
    if stripped.startswith(b"{"):
        return TRANSLATORS["zapp"]
    return TRANSLATORS["compose"]


async def import_package(
    store: Store,
    data: bytes,
    *,
    filename: str,
    fmt: str | None = None,
    name: str | None = None,
    dry_run: bool = False,
    replace: bool = False,
) -> dict[str, object]:
    """POST /v1/packages/import: translate an uploaded file and save the package.

    An upload arrives without the files beside it, so env_file and bind mounts
    are reported, not read. A package of the same name is replaced only when
    asked: an import should not silently take a shipped package's place.
    """
    translation = translate(Source(filename, data), fmt=fmt, name=name)
    package = translation.package
    if not dry_run:
        if not replace:
            try:
                await get_package(store, package.name)
            except NotFound:
                pass
            else:
                raise Conflict(
                    f"package {package.name!r}", "exists; give another name or ask to replace it"
                )
        await save_package(store, package)
    return {**translation.as_dict(), "saved": not dry_run}
