"""The two mammography views the model reads, and how DICOM names them (one table for reader and writer).

A view is named by the ViewPosition string (`CC`, `MLO`) and by the first item of
ViewCodeSequence: SNOMED CT (scheme `SCT`, what `xpr synth` writes) or the retired SNOMED RT
codes (scheme `SRT`) that older modalities still send. `dicom.view_of` reads both, `synth` writes
the SNOMED CT one.
"""

from __future__ import annotations

from typing import NamedTuple

CC = "CC"
MLO = "MLO"
#: the views of one breast pair, in model input order (ViewPosition strings)
VIEWS: tuple[str, str] = (CC, MLO)


class ViewCode(NamedTuple):
    """One coded view: ViewCodeSequence item (CodeValue, CodingSchemeDesignator, CodeMeaning)."""

    value: str
    scheme: str
    meaning: str


#: the code written for each view (SNOMED CT, DICOM CID 4014)
VIEW_CODES: dict[str, ViewCode] = {
    CC: ViewCode("399162004", "SCT", "cranio-caudal"),
    MLO: ViewCode("399368009", "SCT", "medio-lateral oblique"),
}
#: also understood when reading: the retired SNOMED RT codes of the same views
LEGACY_VIEW_CODES: dict[str, ViewCode] = {
    CC: ViewCode("R-10242", "SRT", "cranio-caudal"),
    MLO: ViewCode("R-10226", "SRT", "medio-lateral oblique"),
}

#: CodeValue -> view, and lower-case CodeMeaning -> view, for every code above
VIEW_OF_CODE: dict[str, str] = {
    code.value: view for table in (VIEW_CODES, LEGACY_VIEW_CODES) for view, code in table.items()
}
VIEW_OF_MEANING: dict[str, str] = {
    code.meaning.lower(): view for table in (VIEW_CODES, LEGACY_VIEW_CODES) for view, code in table.items()
}


def view_of_code(value: object, meaning: object = "") -> str:
    """'CC' / 'MLO' for a ViewCodeSequence item's CodeValue, else its CodeMeaning; '' if neither is known."""
    return VIEW_OF_CODE.get(str(value or "").strip()) or VIEW_OF_MEANING.get(str(meaning or "").strip().lower(), "")


def is_view(view: str) -> bool:
    """True for the ViewPosition strings the model reads ('CC', 'MLO'); other views (ML, XCCL, ...) are not."""
    return view in VIEWS
