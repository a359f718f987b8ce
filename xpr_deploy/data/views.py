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


#: every view of DICOM CID 4014 "View for Mammography" (SNOMED CT), as its ACR MQCM abbreviation;
#: only CC and MLO are screening views, the others are diagnostic (or a specimen)
CID_4014: dict[str, str] = {
    "399162004": "CC",  # cranio-caudal
    "399368009": "MLO",  # medio-lateral oblique
    "399260004": "ML",  # medial-lateral
    "399352003": "LM",  # latero-medial
    "399099002": "LMO",  # latero-medial oblique
    "399192008": "XCCL",  # cranio-caudal exaggerated laterally
    "399101009": "XCCM",  # cranio-caudal exaggerated medially
    "399196006": "FB",  # caudo-cranial (from below)
    "399188001": "SIO",  # superolateral to inferomedial oblique
    "441555000": "ISO",  # inferomedial to superolateral oblique
    "127457009": "SPECIMEN",  # tissue specimen from breast
}
#: the same views by CodeMeaning (lower case), for the retired SNOMED RT codes older modalities send
CID_4014_MEANINGS: dict[str, str] = {
    "cranio-caudal": "CC",
    "medio-lateral oblique": "MLO",
    "medial-lateral": "ML",
    "medio-lateral": "ML",
    "latero-medial": "LM",
    "latero-medial oblique": "LMO",
    "cranio-caudal exaggerated laterally": "XCCL",
    "cranio-caudal exaggerated medially": "XCCM",
    "caudo-cranial": "FB",
    "superolateral to inferomedial oblique": "SIO",
    "inferomedial to superolateral oblique": "ISO",
    "tissue specimen from breast": "SPECIMEN",
}
#: DICOM CID 4015 "View Modifier for Mammography" (SNOMED CT): a view with any of them is not a screening view
CID_4015: dict[str, str] = {
    "399055006": "spot compression",
    "399163009": "magnification",
    "399209000": "implant displaced",
    "399226006": "rolled medial",
    "399197002": "rolled lateral",
    "415670009": "rolled superior",
    "414493004": "rolled inferior",
    "399110001": "tangential",
    "399161006": "cleavage",
    "399011000": "axillary tail",
    "442580003": "axillary tissue",
    "441752004": "anterior compression",
    "442581004": "nipple in profile",
    "442593008": "infra-mammary fold",
}


def view_name(value: object, meaning: object = "") -> str:
    """The abbreviation (CC, MLO, ML, XCCL, ...) of a CID 4014 view code, else of its CodeMeaning; '' if unknown."""
    code = str(value or "").strip()
    by_meaning = CID_4014_MEANINGS.get(str(meaning or "").strip().lower(), "")
    return view_of_code(code, meaning) or CID_4014.get(code) or by_meaning


def modifier_name(value: object, meaning: object = "") -> str:
    """A CID 4015 view modifier's name, else the item's own CodeMeaning (any modifier counts), else its code."""
    return CID_4015.get(str(value or "").strip()) or str(meaning or "").strip().lower() or str(value or "?").strip()
