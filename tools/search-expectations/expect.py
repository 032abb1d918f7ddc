#!/usr/bin/env python3
"""Expected results of FHIR searches over the Synthea-120 dataset, computed from the raw bundles.

Usage: python3 expect.py <dataset-dir>   (the directory of `*.json.bz2` Synthea R4 bundles)

Prints `{"queries": [{"query": ..., "total": ..., "what": ...}, ...]}`. Every expectation comes
from a predicate written here by hand against the raw JSON: this script is deliberately independent
of the server (no shared code, no FHIRPath, no search-parameter registry), so that the black-box test
`crates/fhirside/tests/blackbox/synthea_search.rs` can hold the server's search against it. Only the
Python 3 standard library is used.

What the script models:

- References are resolved the way a transaction load does: `urn:uuid:` to the entry with that
  fullUrl, a conditional `Type?identifier=system|value` to the one resource with that identifier.
  `#id` references (into `contained`) are not resources of their own and are skipped. References
  that carry only an `identifier` (PractitionerRole, Location) stay logical: they match
  `:identifier` and never a chain.
- The server assigns new ids on load, so a query that names a resource uses a placeholder that the
  Rust test resolves first by searching for exactly one resource: `{Type?search}` stands for
  `Type/<id>` and `{id:Type?search}` for the bare `<id>`. A compartment search is written
  `{Patient?identifier=...}/Observation?...`. The script checks that every placeholder search
  names exactly one resource of the data.
- Token: `code`, `system|code`, `|code` (no system), `system|`; identifiers as system|value;
  booleans as `true`/`false`; `:not` (resources without a matching value, including those without
  the element), `:text` (case- and accent-insensitive starts-with on CodeableConcept.text or
  Coding.display), `:missing`, `:in` (value-set codes written out below), `:of-type`.
- String: case- and accent-insensitive starts-with on any value; `:exact` (whole value, exact
  case); `:contains` (case- and accent-insensitive substring). `name` covers family, given,
  prefix, suffix and text of every HumanName.
- Date: a value covers [low, high) at its precision (a date without zone is UTC; a Period is
  start-low to end-high, an open end is +infinity); search range S=[sl,sh), stored range T=[tl,th):
  eq sl<=tl and th<=sh, ne not eq, gt th>sh, lt tl<sl, ge gt or eq, le lt or eq, sa tl>=sh,
  eb th<=sl; a resource matches if any of its values does; repeated parameters are ANDed.
- Quantity: eq with a number of precision p matches [x - p/2, x + p/2); gt/lt/ge/le compare
  exactly; ap is |v - x| <= 0.1*|x|; `system|code` must match the stored system and code, `||code`
  the stored code or unit. One query converts UCUM mass concentrations (a hand-written table of the
  units that occur) to the unit searched.
- Composite (`code$value`): both parts on the same Observation or the same component.
- Chains and `_has` follow resolved references; `_include`/`_revinclude` report the number of
  distinct included resources as `included`; `_sort` queries carry `sort` (the parameters) and
  `sort_keys` (element path, kind, direction) so the Rust test can check the order.
- `_text`: words of `text.div` with the XHTML tags removed; `_content`: words of every string in
  the resource. A word is a maximal run of letters and digits, compared case-insensitively; all the
  words of a space-separated value must appear. The script refuses a `_text`/`_content` value whose
  result would depend on tokenizing choices (tags replaced by nothing or by a space) or on strings
  that the load rewrites (ids, references).

Not covered, with the reason: number parameters (no R4 number parameter of these resource types
has data in Synthea), `_tag`/`_security`/`_source` (no data), and uri parameters other than
`_profile` (no data).
"""

import bz2
import html
import json
import os
import re
import sys
import unicodedata
from collections import defaultdict
from datetime import date
from decimal import Decimal

# ---------------------------------------------------------------------------------------------
# Loading and references


class Dataset:
    """Every resource of the bundles, with the lookups a transaction load resolves references by."""

    def __init__(self, directory):
        self.by_type = defaultdict(list)
        self.by_full_url = {}
        self.by_identifier = defaultdict(list)
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json.bz2"))
        if not names:
            sys.exit(f"no *.json.bz2 bundles in {directory}")
        for name in names:
            with bz2.open(os.path.join(directory, name)) as f:
                bundle = json.load(f, parse_float=Decimal)
            for entry in bundle["entry"]:
                resource = entry["resource"]
                kind = resource["resourceType"]
                self.by_type[kind].append(resource)
                self.by_full_url[entry["fullUrl"]] = resource
                for identifier in resource.get("identifier", []):
                    self.by_identifier[(kind, identifier.get("system"), identifier.get("value"))].append(resource)

    def all(self, kind):
        return self.by_type[kind]

    def resolve(self, reference):
        """The resource a Reference element points at after loading, or None."""
        if not isinstance(reference, dict) or "reference" not in reference:
            return None
        text = reference["reference"]
        if text.startswith("#"):
            return None
        if text.startswith("urn:uuid:"):
            return self.by_full_url[text]
        kind, _, criteria = text.partition("?")
        if not criteria.startswith("identifier="):
            raise ValueError(f"unexpected reference {text!r}")
        system, _, value = criteria[len("identifier=") :].partition("|")
        found = self.by_identifier[(kind, system, value)]
        if len(found) != 1:
            raise ValueError(f"conditional reference {text!r} matches {len(found)} resources")
        return found[0]

    def targets(self, resource, dotted, kind=None):
        """The resolved targets of the Reference elements at a path, optionally of one type only."""
        out = []
        for reference in path(resource, dotted):
            target = self.resolve(reference)
            if target is not None and (kind is None or target["resourceType"] == kind):
                out.append(target)
        return out

    def by_unique_identifier(self, kind, system, value):
        found = self.by_identifier[(kind, system, value)]
        if len(found) != 1:
            raise ValueError(f"{kind}?identifier={system}|{value} names {len(found)} resources")
        return found[0]


def items(value):
    if value is None:
        return []
    return value if isinstance(value, list) else [value]


def path(node, dotted):
    """Every value at a dotted element path (`name.given`), lists flattened on the way."""
    current = [node]
    for name in dotted.split("."):
        current = [v for n in current if isinstance(n, dict) for v in items(n.get(name))]
    return current


# ---------------------------------------------------------------------------------------------
# Tokens


def concept_tokens(resource, dotted):
    """(system, code) of every Coding in the CodeableConcepts at a path."""
    return [(c.get("system"), c.get("code")) for cc in path(resource, dotted) for c in cc.get("coding", [])]


def coding_tokens(resource, dotted):
    return [(c.get("system"), c.get("code")) for c in path(resource, dotted)]


def identifier_tokens(resource, dotted="identifier"):
    return [(i.get("system"), i.get("value")) for i in path(resource, dotted)]


def code_tokens(resource, dotted):
    """A `code`, `string` or `boolean` element as a token without system."""
    out = []
    for value in path(resource, dotted):
        if isinstance(value, bool):
            value = "true" if value else "false"
        out.append((None, value))
    return out


def token_matches(tokens, search):
    """One search value against (system, code) pairs: `code`, `system|code`, `|code`, `system|`."""
    if "|" not in search:
        return any(code == search for _, code in tokens)
    system, code = search.split("|", 1)
    if system == "":
        return any(s is None and c == code for s, c in tokens)
    if code == "":
        return any(s == system for s, _ in tokens)
    return any(s == system and c == code for s, c in tokens)


def any_token(tokens, searches):
    """A comma-separated list of token values: any of them (OR)."""
    return any(token_matches(tokens, s) for s in searches.split(","))


def concept_texts(resource, dotted):
    """CodeableConcept.text and Coding.display at a path (what `:text` searches)."""
    out = []
    for cc in path(resource, dotted):
        if "text" in cc:
            out.append(cc["text"])
        out.extend(c["display"] for c in cc.get("coding", []) if "display" in c)
    return out


# ---------------------------------------------------------------------------------------------
# Strings


def fold(text):
    """Case- and accent-insensitive form: NFD, combining marks dropped, casefolded."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFD", text)
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold()


def string_matches(values, search, modifier=None):
    if modifier == "exact":
        return any(v == search for v in values)
    if modifier == "contains":
        return any(fold(search) in fold(v) for v in values)
    assert modifier is None
    return any(fold(v).startswith(fold(search)) for v in values)


def human_name_strings(resource, dotted="name"):
    out = []
    for name in path(resource, dotted):
        for part in ("family", "given", "prefix", "suffix", "text"):
            out.extend(items(name.get(part)))
    return out


# ---------------------------------------------------------------------------------------------
# Dates

DATE_RE = re.compile(
    r"^(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2})(?::(\d{2})(?:\.(\d{1,9}))?)?(Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
MICROS_PER_DAY = 86_400_000_000
INFINITY = float("inf")
EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def day_micros(y, m, d):
    return (date(y, m, d).toordinal() - EPOCH_ORDINAL) * MICROS_PER_DAY


def date_range(text):
    """The [low, high) interval in microseconds (UTC) that a date/dateTime covers at its precision."""
    match = DATE_RE.match(text)
    if not match:
        raise ValueError(f"not a FHIR date/dateTime: {text!r}")
    y, mo, d, hh, mi, ss, frac, zone = match.groups()
    y = int(y)
    if mo is None:
        return day_micros(y, 1, 1), day_micros(y + 1, 1, 1)
    mo = int(mo)
    if d is None:
        high = day_micros(y + 1, 1, 1) if mo == 12 else day_micros(y, mo + 1, 1)
        return day_micros(y, mo, 1), high
    start = day_micros(y, mo, int(d))
    if hh is None:
        return start, start + MICROS_PER_DAY
    offset = 0
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        offset = sign * (int(zone[1:3]) * 60 + int(zone[4:6])) * 60_000_000
    low = start + (int(hh) * 3600 + int(mi) * 60 + int(ss or 0)) * 1_000_000 - offset
    if ss is None:
        return low, low + 60_000_000
    if frac is None:
        return low, low + 1_000_000
    digits = min(len(frac), 6)
    low += int(frac[:digits].ljust(6, "0"))
    return low, low + 10 ** (6 - digits)


def value_range(value):
    """A date/dateTime/instant string or a Period as its [low, high) interval."""
    if isinstance(value, str):
        return date_range(value)
    low = date_range(value["start"])[0] if "start" in value else -INFINITY
    high = date_range(value["end"])[1] if "end" in value else INFINITY
    return low, high


PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")


def split_prefix(search):
    if search[:2] in PREFIXES and len(search) > 2 and (search[2].isdigit() or search[2] in "-."):
        return search[:2], search[2:]
    return "eq", search


def date_matches(values, search):
    """Any of the stored dates/Periods against one search value with an optional prefix."""
    prefix, text = split_prefix(search)
    sl, sh = date_range(text)
    for value in values:
        tl, th = value_range(value)
        eq = sl <= tl and th <= sh
        if {
            "eq": eq,
            "ne": not eq,
            "gt": th > sh,
            "lt": tl < sl,
            "ge": th > sh or eq,
            "le": tl < sl or eq,
            "sa": tl >= sh,
            "eb": th <= sl,
        }[prefix]:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Quantities

UCUM = "http://unitsofmeasure.org"


def quantity_matches(quantities, search, convert=None):
    """Stored Quantities against `[prefix]number[|system|code]`.

    `convert` maps stored UCUM codes to the factor that turns them into the searched unit (the
    canonical-unit comparison of UCUM, written out for the units that occur).
    """
    number, _, units = search.partition("|")
    prefix, number = split_prefix(number)
    x = Decimal(number)
    system, _, code = units.partition("|") if units else (None, None, None)
    half = Decimal(5) * Decimal(10) ** (x.as_tuple().exponent - 1)
    for q in quantities:
        if "value" not in q:
            continue
        v = Decimal(q["value"])
        if convert is not None:
            if q.get("system") != UCUM or q.get("code") not in convert:
                continue
            v = v * convert[q["code"]]
        elif system:
            if q.get("system") != system or q.get("code") != code:
                continue
        elif code:
            if code not in (q.get("code"), q.get("unit")):
                continue
        eq = x - half <= v < x + half
        if {
            "eq": eq,
            "ne": not eq,
            "gt": v > x,
            "lt": v < x,
            "ge": v >= x,
            "le": v <= x,
            "ap": abs(v - x) <= abs(x) / 10,
        }[prefix]:
            return True
    return False


# ---------------------------------------------------------------------------------------------
# Full text

WORD_RE = re.compile(r"[^\W_]+")


def words(text):
    return {fold(w) for w in WORD_RE.findall(text)}


def narrative_words(resource, tag_replacement):
    div = resource.get("text", {}).get("div", "")
    return words(html.unescape(re.sub(r"<[^>]*>", tag_replacement, div)))


def content_words(resource, rewritten_too):
    """Words of every string in a resource; without the ids and references a load rewrites unless
    `rewritten_too`."""
    out = set()

    def walk(node, key):
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and (rewritten_too or key not in ("id", "reference")):
            out.update(words(node))

    walk(resource, None)
    return out


# ---------------------------------------------------------------------------------------------
# The queries


class Expectations:
    def __init__(self, ds):
        self.ds = ds
        self.queries = []

    def add(self, query, what, predicate, types=None, **extra):
        """Counts the resources of the searched type(s) for which `predicate` holds."""
        if types is None:
            target = re.sub(r"\{[^}]*\}", "", query).split("?", 1)[0].rsplit("/", 1)[-1]
            types = [target]
        matches = [r for t in types for r in self.ds.all(t) if predicate(r)]
        entry = {"query": query, "total": len(matches), "what": what}
        for key, value in extra.items():
            if key == "included":
                entry["included"] = len(value(matches))
                # One page of `_count=1000` must hold every match and the server adds at most 1000
                # resources per `_include`.
                if len(matches) > 1000 or entry["included"] > 1000:
                    raise ValueError(f"{query}: too many matches or includes for one page")
            else:
                entry[key] = value
        self.check_placeholders(query)
        self.queries.append(entry)
        return matches

    def check_placeholders(self, query):
        for inner in re.findall(r"\{(?:id:)?([A-Za-z]+)\?identifier=([^|}]*)\|([^}]*)\}", query):
            self.ds.by_unique_identifier(*inner)
        if query.count("{") != len(re.findall(r"\{(?:id:)?[A-Za-z]+\?identifier=[^|}]*\|[^}]*\}", query)):
            raise ValueError(f"placeholder the script cannot check: {query}")


SYNTHEA = "https://github.com/synthetichealth/synthea"
NPI = "http://hl7.org/fhir/sid/us-npi"
LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"

# http://hl7.org/fhir/ValueSet/observation-category (R4), written out.
OBSERVATION_CATEGORY = {
    ("http://terminology.hl7.org/CodeSystem/observation-category", c)
    for c in "social-history vital-signs imaging laboratory procedure survey exam therapy activity".split()
}
# http://hl7.org/fhir/ValueSet/languages (R4): these codes of urn:ietf:bcp:47.
LANGUAGES = {
    ("urn:ietf:bcp:47", c)
    for c in (
        "ar bn cs da de de-AT de-CH de-DE el en en-AU en-CA en-GB en-IN en-NZ en-SG en-US es es-AR es-ES "
        "es-UY fi fr fr-BE fr-CH fr-FR fy fy-NL hi hr it it-CH it-IT ja ko nl nl-BE nl-NL no no-NO pa pl "
        "pt pt-BR ru ru-RU sr sr-RS sv sv-SE te zh zh-CN zh-HK zh-SG zh-TW"
    ).split()
}
# Factors from the UCUM mass-concentration units in the data to mg/dL.
TO_MG_PER_DL = {
    "mg/dL": Decimal(1),
    "g/dL": Decimal(1000),
    "g/L": Decimal(100),
    "mg/L": Decimal("0.1"),
    "ug/mL": Decimal("0.1"),
    "ug/dL": Decimal("0.001"),
    "ug/L": Decimal("0.0001"),
    "ng/mL": Decimal("0.0001"),
    "pg/mL": Decimal("0.0000001"),
}


def build(ds):
    ex = Expectations(ds)
    add = ex.add

    # People and places the id-based queries name (by identifier: ids change on load).
    patient_uuid = "057aa36e-b892-9964-75b9-ffb46b097e34"
    patient = ds.by_unique_identifier("Patient", SYNTHEA, patient_uuid)
    patient_ref = f"{{Patient?identifier={SYNTHEA}|{patient_uuid}}}"
    patient_id = f"{{id:Patient?identifier={SYNTHEA}|{patient_uuid}}}"
    org_uuid = "69176529-fd1f-3b3f-abce-a0a3626769eb"  # MOUNT AUBURN HOSPITAL
    org = ds.by_unique_identifier("Organization", SYNTHEA, org_uuid)
    practitioner_npi = "9999999619"
    practitioner = ds.by_unique_identifier("Practitioner", NPI, practitioner_npi)

    # --- token ---------------------------------------------------------------------------
    add("Patient?gender=female", "token", lambda r: any_token(code_tokens(r, "gender"), "female"))
    add(f"Observation?code={LOINC}|8302-2", "token", lambda r: any_token(concept_tokens(r, "code"), f"{LOINC}|8302-2"))
    add("Observation?code=8302-2", "token", lambda r: any_token(concept_tokens(r, "code"), "8302-2"))
    add("Observation?code=|8302-2", "token", lambda r: any_token(concept_tokens(r, "code"), "|8302-2"))
    add(
        "DiagnosticReport?category=http://terminology.hl7.org/CodeSystem/v2-0074|",
        "token",
        lambda r: any_token(concept_tokens(r, "category"), "http://terminology.hl7.org/CodeSystem/v2-0074|"),
    )
    add(
        f"Condition?code={SNOMED}|59621000,{SNOMED}|44054006",
        "token",
        lambda r: any_token(concept_tokens(r, "code"), f"{SNOMED}|59621000,{SNOMED}|44054006"),
    )
    add(
        "Encounter?class=http://terminology.hl7.org/CodeSystem/v3-ActCode|EMER",
        "token",
        lambda r: any_token(coding_tokens(r, "class"), "http://terminology.hl7.org/CodeSystem/v3-ActCode|EMER"),
    )
    add(
        "Patient?identifier=http://hl7.org/fhir/sid/us-ssn|999-82-5655",
        "token",
        lambda r: any_token(identifier_tokens(r), "http://hl7.org/fhir/sid/us-ssn|999-82-5655"),
    )
    add("Patient?identifier=999-82-5655", "token", lambda r: any_token(identifier_tokens(r), "999-82-5655"))
    add(
        "Patient?identifier=http://hl7.org/fhir/sid/us-ssn|999-82-5655,http://hl7.org/fhir/sid/us-ssn|nothing",
        "token",
        lambda r: any_token(
            identifier_tokens(r), "http://hl7.org/fhir/sid/us-ssn|999-82-5655,http://hl7.org/fhir/sid/us-ssn|nothing"
        ),
    )
    add("Organization?active=true", "token", lambda r: any_token(code_tokens(r, "active"), "true"))
    add("Practitioner?active=false", "token", lambda r: any_token(code_tokens(r, "active"), "false"))
    add("CarePlan?status=active", "token", lambda r: any_token(code_tokens(r, "status"), "active"))
    add("MedicationRequest?status:not=stopped", "token", lambda r: not any_token(code_tokens(r, "status"), "stopped"))
    add(
        "Observation?category:not=laboratory",
        "token",
        lambda r: not any_token(concept_tokens(r, "category"), "laboratory"),
    )
    add(
        "Condition?code:text=hypert",
        "token",
        lambda r: string_matches(concept_texts(r, "code"), "hypert"),
    )
    add(
        "Observation?code:text=body m",
        "token",
        lambda r: string_matches(concept_texts(r, "code"), "body m"),
    )
    add("Encounter?reason-code:missing=true", "token", lambda r: not concept_tokens(r, "reasonCode"))
    add("Encounter?reason-code:missing=false", "token", lambda r: bool(concept_tokens(r, "reasonCode")))
    add(
        "Observation?category:in=http://hl7.org/fhir/ValueSet/observation-category",
        "token",
        lambda r: any(t in OBSERVATION_CATEGORY for t in concept_tokens(r, "category")),
    )
    add(
        "Patient?language:in=http://hl7.org/fhir/ValueSet/languages",
        "token",
        lambda r: any(t in LANGUAGES for t in concept_tokens(r, "communication.language")),
    )

    def of_type(r, system, code, value):
        return any(
            i.get("value") == value and any_token(concept_tokens(i, "type"), f"{system}|{code}")
            for i in path(r, "identifier")
        )

    add(
        f"Patient?identifier:of-type={V2_0203}|MR|{patient_uuid}",
        "token",
        lambda r: of_type(r, V2_0203, "MR", patient_uuid),
    )
    add(
        f"Patient?identifier:of-type={V2_0203}|SS|999-82-5655",
        "token",
        lambda r: of_type(r, V2_0203, "SS", "999-82-5655"),
    )
    add(
        f"Patient?identifier:of-type={V2_0203}|DL|999-82-5655",
        "token",
        lambda r: of_type(r, V2_0203, "DL", "999-82-5655"),
    )

    # --- string --------------------------------------------------------------------------
    def family(r):
        return path(r, "name.family")

    add("Patient?family=leon", "string", lambda r: string_matches(family(r), "leon"))
    add("Patient?family=CORTES", "string", lambda r: string_matches(family(r), "CORTES"))
    add("Patient?family=Gu", "string", lambda r: string_matches(family(r), "Gu"))
    add("Patient?family=Guzmán", "string", lambda r: string_matches(family(r), "Guzmán"))
    add("Patient?family:exact=León820", "string", lambda r: string_matches(family(r), "León820", "exact"))
    add("Patient?family:exact=leon820", "string", lambda r: string_matches(family(r), "leon820", "exact"))
    add("Patient?family:exact=León", "string", lambda r: string_matches(family(r), "León", "exact"))
    add("Patient?family:contains=MAN", "string", lambda r: string_matches(family(r), "MAN", "contains"))
    add("Patient?name=kiehn", "string", lambda r: string_matches(human_name_strings(r), "kiehn"))
    add("Patient?name=mr", "string", lambda r: string_matches(human_name_strings(r), "mr"))
    add("Patient?name=ph", "string", lambda r: string_matches(human_name_strings(r), "ph"))
    add("Patient?given=chi", "string", lambda r: string_matches(path(r, "name.given"), "chi"))
    add("Patient?address-city=worcester", "string", lambda r: string_matches(path(r, "address.city"), "worcester"))
    add("Patient?address-city=new", "string", lambda r: string_matches(path(r, "address.city"), "new"))
    add("Patient?address-state=MA", "string", lambda r: string_matches(path(r, "address.state"), "MA"))
    add("Organization?name=mount", "string", lambda r: string_matches(path(r, "name") + path(r, "alias"), "mount"))
    add(
        "Organization?name:contains=hospital",
        "string",
        lambda r: string_matches(path(r, "name") + path(r, "alias"), "hospital", "contains"),
    )
    add("Practitioner?name=dr", "string", lambda r: string_matches(human_name_strings(r), "dr"))

    # --- date ----------------------------------------------------------------------------
    def dates(r, *dotted):
        return [v for d in dotted for v in path(r, d)]

    def all_dates(values, *searches):
        return all(date_matches(values, s) for s in searches)

    for search in ("1980", "ge1970-01-01", "1964-03", "1929-03-21", "ne1980", "sa2000", "eb1950", "le1950-06"):
        add(f"Patient?birthdate={search}", "date", lambda r, s=search: date_matches(dates(r, "birthDate"), s))
    add("Patient?death-date:missing=false", "date", lambda r: bool(dates(r, "deceasedDateTime")))
    for search in ("2015", "2015-06-04", "sa2020-01-01", "eb1960", "lt2000-06-15T10:30:00Z"):
        add(f"Encounter?date={search}", "date", lambda r, s=search: date_matches(dates(r, "period"), s))
    add(
        "Encounter?date=ge2015&date=lt2016",
        "date",
        lambda r: all_dates(dates(r, "period"), "ge2015", "lt2016"),
    )
    for search in ("2019-06", "gt2021-01-01T00:00:00+01:00", "2010-09-16T12:21:06+02:00", "2010-09-16T10:21:06Z"):
        add(f"Observation?date={search}", "date", lambda r, s=search: date_matches(dates(r, "effectiveDateTime"), s))
    add("CarePlan?date=ge2021", "date", lambda r: date_matches(dates(r, "period"), "ge2021"))
    add("CarePlan?date=eq2020", "date", lambda r: date_matches(dates(r, "period"), "eq2020"))
    add("Condition?onset-date=lt1970", "date", lambda r: date_matches(dates(r, "onsetDateTime"), "lt1970"))
    add("Condition?abatement-date:missing=true", "date", lambda r: not dates(r, "abatementDateTime"))
    add(
        "Procedure?date=ge2020-03-01&date=le2020-03-31",
        "date",
        lambda r: all_dates(dates(r, "performedPeriod", "performedDateTime"), "ge2020-03-01", "le2020-03-31"),
    )

    # --- quantity ------------------------------------------------------------------------
    def value_q(r):
        return path(r, "valueQuantity")

    for search in (
        "gt100",
        f"lt5|{UCUM}|mmol/L",
        "100",
        "100.0",
        "ap100",
        "ge37.5|http://unitsofmeasure.org|Cel",
        "le5||mmol/L",
        "ne40|http://unitsofmeasure.org|mm[Hg]",
    ):
        add(f"Observation?value-quantity={search}", "quantity", lambda r, s=search: quantity_matches(value_q(r), s))
    add(
        f"Observation?value-quantity=gt13000|{UCUM}|mg/dL",
        "quantity",
        lambda r: quantity_matches(value_q(r), "gt13000", convert=TO_MG_PER_DL),
        note="UCUM canonical units: stored g/dL, g/L, ... compared in mg/dL",
    )

    # --- reference -----------------------------------------------------------------------
    add(f"Observation?subject={patient_ref}", "reference", lambda r: patient in ds.targets(r, "subject"))
    add(f"Observation?patient={patient_id}", "reference", lambda r: patient in ds.targets(r, "subject", "Patient"))
    add(f"Condition?subject:Patient={patient_id}", "reference", lambda r: patient in ds.targets(r, "subject"))
    add(
        f"Encounter?service-provider={{Organization?identifier={SYNTHEA}|{org_uuid}}}",
        "reference",
        lambda r: org in ds.targets(r, "serviceProvider"),
    )
    add(
        f"Encounter?participant={{Practitioner?identifier={NPI}|{practitioner_npi}}}",
        "reference",
        lambda r: practitioner in ds.targets(r, "participant.individual"),
    )

    def identifier_ref(r, dotted, system, value):
        return any(
            ref.get("identifier", {}).get("system") == system and ref["identifier"].get("value") == value
            for ref in path(r, dotted)
        )

    add(
        f"PractitionerRole?practitioner:identifier={NPI}|9999999989",
        "reference",
        lambda r: identifier_ref(r, "practitioner", NPI, "9999999989"),
    )
    add(
        f"Location?organization:identifier={SYNTHEA}|{org_uuid}",
        "reference",
        lambda r: identifier_ref(r, "managingOrganization", SYNTHEA, org_uuid),
    )
    add(
        f"Encounter?participant:identifier={NPI}|{practitioner_npi}",
        "reference",
        lambda r: identifier_ref(r, "participant.individual", NPI, practitioner_npi),
        note="Encounter participants are conditional references without an identifier element",
    )
    add("Procedure?reason-reference:missing=true", "reference", lambda r: not ds.targets(r, "reasonReference"))
    add("CarePlan?condition:missing=false", "reference", lambda r: bool(ds.targets(r, "addresses")))

    # --- composite -----------------------------------------------------------------------
    def code_value(item, code, value):
        return any_token(concept_tokens(item, "code"), code) and quantity_matches(path(item, "valueQuantity"), value)

    add(
        f"Observation?code-value-quantity={LOINC}|8302-2$gt150",
        "composite",
        lambda r: code_value(r, f"{LOINC}|8302-2", "gt150"),
    )
    add(
        f"Observation?code-value-quantity={LOINC}|8480-6$gt140",
        "composite",
        lambda r: code_value(r, f"{LOINC}|8480-6", "gt140"),
    )
    add(
        f"Observation?component-code-value-quantity={LOINC}|8480-6$gt140",
        "composite",
        lambda r: any(code_value(c, f"{LOINC}|8480-6", "gt140") for c in path(r, "component")),
    )
    add(
        f"Observation?component-code-value-quantity={LOINC}|8462-4$lt60",
        "composite",
        lambda r: any(code_value(c, f"{LOINC}|8462-4", "lt60") for c in path(r, "component")),
    )
    add(
        f"Observation?combo-code-value-quantity={LOINC}|8480-6$gt140,{LOINC}|8302-2$gt190",
        "composite",
        lambda r: any(
            code_value(item, code, value)
            for item in [r] + path(r, "component")
            for code, value in ((f"{LOINC}|8480-6", "gt140"), (f"{LOINC}|8302-2", "gt190"))
        ),
    )

    # --- chains --------------------------------------------------------------------------
    add(
        "Observation?subject:Patient.gender=female",
        "chain",
        lambda r: any(any_token(code_tokens(p, "gender"), "female") for p in ds.targets(r, "subject", "Patient")),
    )
    add(
        "Observation?subject.family=cormier",
        "chain",
        lambda r: any(string_matches(family(p), "cormier") for p in ds.targets(r, "subject", "Patient")),
    )
    add(
        "Encounter?service-provider.name=mount",
        "chain",
        lambda r: any(string_matches(path(o, "name"), "mount") for o in ds.targets(r, "serviceProvider")),
    )
    add(
        "Observation?encounter.service-provider.name=mount auburn",
        "chain",
        lambda r: any(
            string_matches(path(o, "name"), "mount auburn")
            for e in ds.targets(r, "encounter")
            for o in ds.targets(e, "serviceProvider")
        ),
    )
    add(
        "Condition?subject:Patient.birthdate=lt1960",
        "chain",
        lambda r: any(date_matches(path(p, "birthDate"), "lt1960") for p in ds.targets(r, "subject", "Patient")),
    )
    add(
        "Observation?subject.identifier=http://hl7.org/fhir/sid/us-ssn|999-82-5655",
        "chain",
        lambda r: any(
            any_token(identifier_tokens(p), "http://hl7.org/fhir/sid/us-ssn|999-82-5655")
            for p in ds.targets(r, "subject", "Patient")
        ),
    )

    # --- reverse chains ------------------------------------------------------------------
    def referrers(kind, dotted, keep, target_kind=None):
        """Ids of the resources that the `dotted` references of matching `kind` resources point to."""
        return {t["id"] for s in ds.all(kind) if keep(s) for t in ds.targets(s, dotted, target_kind)}

    has_obs = referrers("Observation", "subject", lambda o: any_token(concept_tokens(o, "code"), f"{LOINC}|2708-6"))
    add(f"Patient?_has:Observation:patient:code={LOINC}|2708-6", "reverse-chain", lambda r: r["id"] in has_obs)
    has_cond = referrers("Condition", "subject", lambda c: any_token(concept_tokens(c, "code"), f"{SNOMED}|59621000"))
    add(f"Patient?_has:Condition:subject:code={SNOMED}|59621000", "reverse-chain", lambda r: r["id"] in has_cond)
    has_cond_none = referrers("Condition", "subject", lambda c: any_token(concept_tokens(c, "code"), f"{SNOMED}|0"))
    add(f"Patient?_has:Condition:subject:code={SNOMED}|0", "reverse-chain", lambda r: r["id"] in has_cond_none)
    emergency = referrers(
        "Encounter", "participant.individual", lambda e: any_token(coding_tokens(e, "class"), "EMER"), "Practitioner"
    )
    add("Practitioner?_has:Encounter:participant:class=EMER", "reverse-chain", lambda r: r["id"] in emergency)
    encounters_with_pain = referrers(
        "Observation", "encounter", lambda o: any_token(concept_tokens(o, "code"), f"{LOINC}|2708-6")
    )
    orgs_nested = {
        o["id"]
        for e in ds.all("Encounter")
        if e["id"] in encounters_with_pain
        for o in ds.targets(e, "serviceProvider")
    }
    add(
        f"Organization?_has:Encounter:service-provider:_has:Observation:encounter:code={LOINC}|2708-6",
        "reverse-chain",
        lambda r: r["id"] in orgs_nested,
    )

    # --- common parameters ---------------------------------------------------------------
    add(f"Patient?_id={patient_id}", "common", lambda r: r is patient)
    add(f"Observation?_id={patient_id}", "common", lambda r: False)
    add("Condition?_lastUpdated=gt2000", "common", lambda r: True)
    add("Condition?_lastUpdated=lt2000", "common", lambda r: False)
    add(
        "Observation?_profile=http://hl7.org/fhir/StructureDefinition/bodyheight",
        "uri",
        lambda r: "http://hl7.org/fhir/StructureDefinition/bodyheight" in path(r, "meta.profile"),
    )
    add(
        "Observation?_profile=http://hl7.org/fhir/StructureDefinition/vitalsigns",
        "uri",
        lambda r: "http://hl7.org/fhir/StructureDefinition/vitalsigns" in path(r, "meta.profile"),
    )
    add("Observation?_profile:missing=true", "uri", lambda r: not path(r, "meta.profile"))
    add(
        "Observation?_profile=http://hl7.org/fhir/StructureDefinition/body",
        "uri",
        lambda r: "http://hl7.org/fhir/StructureDefinition/body" in path(r, "meta.profile"),
    )

    def text_query(query, search, kind):
        wanted = {fold(w) for w in search.split(" ")}

        def matches(r, variant):
            if kind == "_text":
                found = narrative_words(r, " " if variant else "")
            else:
                found = content_words(r, rewritten_too=variant)
            return wanted <= found

        for r in ds.all(query.split("?")[0]):
            if matches(r, False) != matches(r, True):
                raise ValueError(f"{query}: the result depends on tokenizing choices ({r['id']})")
        add(query, "text", lambda r: matches(r, False))

    text_query("CarePlan?_text=diabetes", "diabetes", "_text")
    text_query("CarePlan?_text=hypertension lifestyle", "hypertension lifestyle", "_text")
    text_query("Patient?_text=synthea", "synthea", "_text")
    text_query("Condition?_content=hypertension", "hypertension", "_content")
    text_query("Condition?_content=acute bronchitis", "acute bronchitis", "_content")
    text_query("Procedure?_content=chemotherapy", "chemotherapy", "_content")

    # --- _include / _revinclude ----------------------------------------------------------
    def include(dotted, kind=None):
        def count(matches):
            return {t["id"] for m in matches for t in ds.targets(m, dotted, kind)}

        return count

    def revinclude(source, dotted):
        def count(matches):
            ids = {m["id"] for m in matches}
            return {s["id"] for s in ds.all(source) if any(t["id"] in ids for t in ds.targets(s, dotted))}

        return count

    add(
        f"Observation?code={LOINC}|2708-6&_include=Observation:subject",
        "include",
        lambda r: any_token(concept_tokens(r, "code"), f"{LOINC}|2708-6"),
        included=include("subject"),
    )
    add(
        "Encounter?class=EMER&_include=Encounter:service-provider",
        "include",
        lambda r: any_token(coding_tokens(r, "class"), "EMER"),
        included=include("serviceProvider"),
    )
    add(
        "Patient?gender=male&birthdate=ge2000&_revinclude=Encounter:patient",
        "include",
        lambda r: any_token(code_tokens(r, "gender"), "male") and date_matches(path(r, "birthDate"), "ge2000"),
        included=revinclude("Encounter", "subject"),
    )

    # --- _sort -----------------------------------------------------------------------------
    add(
        "Patient?gender=male&_sort=birthdate",
        "sort",
        lambda r: any_token(code_tokens(r, "gender"), "male"),
        sort=["birthdate"],
        sort_keys=[{"path": "birthDate", "kind": "date", "descending": False}],
    )
    add(
        f"Observation?code={LOINC}|8302-2&_sort=-date",
        "sort",
        lambda r: any_token(concept_tokens(r, "code"), f"{LOINC}|8302-2"),
        sort=["-date"],
        sort_keys=[{"path": "effectiveDateTime", "kind": "date", "descending": True}],
    )
    add(
        "Patient?gender=male&_sort=family,-birthdate",
        "sort",
        lambda r: any_token(code_tokens(r, "gender"), "male"),
        sort=["family", "-birthdate"],
        sort_keys=[
            {"path": "name.family", "kind": "string", "descending": False},
            {"path": "birthDate", "kind": "date", "descending": True},
        ],
    )
    add(
        f"Condition?code={SNOMED}|840539006&_sort=abatement-date",
        "sort",
        lambda r: any_token(concept_tokens(r, "code"), f"{SNOMED}|840539006"),
        sort=["abatement-date"],
        sort_keys=[{"path": "abatementDateTime", "kind": "date", "descending": False}],
    )

    # --- system level and compartments ---------------------------------------------------------
    add("?_type=Patient,Practitioner", "system", lambda r: True, types=["Patient", "Practitioner"])
    add(
        "?_type=Patient,Practitioner&gender=female",
        "system",
        lambda r: any_token(code_tokens(r, "gender"), "female"),
        types=["Patient", "Practitioner"],
    )
    add(
        f"?_type=Condition,Procedure&code={SNOMED}|59621000,{SNOMED}|430193006",
        "system",
        lambda r: any_token(concept_tokens(r, "code"), f"{SNOMED}|59621000,{SNOMED}|430193006"),
        types=["Condition", "Procedure"],
    )
    add(
        f"{patient_ref}/Observation?code={LOINC}|8302-2",
        "compartment",
        lambda r: patient in ds.targets(r, "subject") + ds.targets(r, "performer")
        and any_token(concept_tokens(r, "code"), f"{LOINC}|8302-2"),
    )
    add(
        f"{patient_ref}/Condition",
        "compartment",
        lambda r: patient in ds.targets(r, "subject") + ds.targets(r, "asserter"),
    )
    return ex


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: expect.py <dataset-dir>")
    ex = build(Dataset(sys.argv[1]))
    json.dump({"queries": ex.queries}, sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
