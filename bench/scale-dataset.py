#!/usr/bin/env python3
"""Makes renamed copies of a Synthea dataset, so that it can be loaded several times into one server.

    bench/scale-dataset.py --dataset DIR --copies 10 --out OUT

Writes OUT/copy-01 ... OUT/copy-09 (copy 0 is the dataset itself, unchanged): in each, a symlink to
every `0-*` file of DIR (the batch bundles of Organizations, Practitioners and Locations: they
create with `ifNoneExist`, so loading them again changes nothing) and a rewritten copy of every
other `*.json.bz2` (one transaction bundle per patient). In a rewritten bundle:

- every UUID that is the `urn:uuid:` fullUrl of one of the bundle's entries is replaced, wherever it
  occurs (fullUrl, resource id, `urn:uuid:` references, and identifiers that carry the same value,
  such as the Patient's Synthea and medical-record-number identifiers), by a name-based UUID
  (uuid5) of the copy number and the original, so copies never collide and reruns are identical;
- the Patient's other identifiers (SSN, driver's license, passport) get a `-cNN` suffix.

Conditional references (`Practitioner?identifier=...`, `Organization?identifier=...`,
`Location?identifier=...`) are left alone: every copy refers to the same, shared Organizations,
Practitioners and Locations. Names, codes, dates and values are unchanged, so a search matches
N times as many resources in an N-times dataset.

The copies are compressed at bzip2 level 1 (fast; the loader decompresses them up front).
Needs only the Python standard library.
"""

import argparse
import bz2
import json
import multiprocessing
import os
import re
import sys
import uuid

NAMESPACE = uuid.UUID("6f6e9d0e-5d2c-4c55-9b0c-2d1f3e0b7a11")
UUID_RE = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
URN_UUID = "urn:uuid:"


def rewrite(text, copy):
    """The JSON text `text` of a bundle, as copy number `copy`. The replacements are textual, so
    everything else (number formats, key order, whitespace) stays as it was."""
    bundle = json.loads(text)
    local = set()
    suffixed = set()
    for entry in bundle.get("entry", []):
        full_url = entry.get("fullUrl", "")
        if full_url.startswith(URN_UUID):
            local.add(full_url[len(URN_UUID):].lower())
        resource = entry.get("resource", {})
        if resource.get("resourceType") == "Patient":
            for identifier in resource.get("identifier", []):
                value = identifier.get("value")
                if isinstance(value, str) and not UUID_RE.fullmatch(value):
                    suffixed.add(value)
    renamed = {u: str(uuid.uuid5(NAMESPACE, f"{copy}/{u}")) for u in local}
    text = UUID_RE.sub(lambda m: renamed.get(m.group(0).lower(), m.group(0)), text)
    for value in suffixed:
        quoted = json.dumps(value, ensure_ascii=False)
        text = text.replace(quoted, f"{quoted[:-1]}-c{copy:02d}\"")
    return text, len(bundle.get("entry", []))


def work(job):
    source, target, copy = job
    with bz2.open(source, "rt", encoding="utf-8") as f:
        text, entries = rewrite(f.read(), copy)
    tmp = target + ".tmp"
    with bz2.open(tmp, "wt", encoding="utf-8", compresslevel=1) as f:
        f.write(text)
    os.replace(tmp, target)
    return entries


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", required=True, help="directory of *.json.bz2 bundles")
    parser.add_argument("--copies", type=int, required=True, help="total copies, including the original")
    parser.add_argument("--out", required=True, help="where to write copy-01 ... copy-NN")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    if args.copies < 1:
        sys.exit("--copies must be at least 1")
    names = sorted(n for n in os.listdir(args.dataset) if n.endswith(".json.bz2"))
    if not names:
        sys.exit(f"no *.json.bz2 in {args.dataset}")
    jobs = []
    for copy in range(1, args.copies):
        directory = os.path.join(args.out, f"copy-{copy:02d}")
        os.makedirs(directory, exist_ok=True)
        for name in names:
            source = os.path.abspath(os.path.join(args.dataset, name))
            target = os.path.join(directory, name)
            if name.startswith("0-"):
                if not os.path.lexists(target):
                    os.symlink(source, target)
            elif not os.path.exists(target):
                jobs.append((source, target, copy))
    with multiprocessing.Pool(max(1, args.jobs)) as pool:
        resources = sum(pool.imap_unordered(work, jobs, chunksize=4))
    print(f"scale-dataset: {len(jobs)} bundles rewritten ({resources} resources) in {args.copies - 1} copies under {args.out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
