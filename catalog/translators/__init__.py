"""Foreign application descriptions to Marina packages.

One module per format (`compose`, `pmx`, `zapp`), each a `Translator`
(see `base`); `translate` detects the format, reads the file safely and
builds the package through `building`, the same way for every format.
"""

from __future__ import annotations

from pathlib import Path

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
