"""The project's LICENSE and CITATION.cff: the licence setup.py declares, and a valid CFF 1.2.0 citation of this
package and of the UMGF paper, consistent with the BibTeX the model and dataset cards print."""

from __future__ import annotations

import hashlib
import re
from importlib import metadata
from pathlib import Path

import yaml

from modeling_umgf.tools.hub import UMGF_CITATION

ROOT = Path(__file__).resolve().parent.parent
# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"


def test_license_file_is_the_apache_2_0_text_that_setup_py_declares() -> None:
    assert metadata.metadata("umgf")["License"] == "Apache-2.0"
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256


def bibtex_fields(entry: str) -> dict[str, str]:
    return dict(re.findall(r"^\s*(\w+)\s*=\s*\{(.*)\},?$", entry, flags=re.M))


def test_citation_cff_cites_this_package_and_the_umgf_paper() -> None:
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    # CFF 1.2.0 required keys, and this package's identity
    assert cff["cff-version"] == "1.2.0"
    assert cff["message"] and cff["title"].startswith("umgf") and cff["authors"]
    assert (cff["version"], cff["license"]) == (metadata.version("umgf"), metadata.metadata("umgf")["License"])
    (paper,) = cff["references"]
    assert paper["type"] == "conference-paper" and paper["doi"] == "10.1609/aaai.v35i16.17687"
    bibtex = bibtex_fields(UMGF_CITATION)
    assert (paper["title"], str(paper["year"]), paper["collection-title"]) == (
        bibtex["title"],
        bibtex["year"],
        bibtex["booktitle"],
    )
    authors = [f"{a['family-names']}, {a['given-names']}" for a in paper["authors"]]
    assert authors == bibtex["author"].split(" and ")
