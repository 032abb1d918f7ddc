use super::*;

/// Relative tolerance: conversions go through several floating-point factors.
fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * a.abs().max(b.abs())
}

fn canon(value: f64, code: &str) -> Canonical {
    canonical(value, code).unwrap_or_else(|| panic!("{code:?} should be convertible"))
}

#[track_caller]
fn assert_canonical(value: f64, code: &str, expected_value: f64, expected_unit: &str) {
    let c = canon(value, code);
    assert_eq!(c.unit, expected_unit, "unit of {value} {code}");
    assert!(close(c.value, expected_value), "{value} {code}: {} != {expected_value}", c.value);
}

/// The two quantities are the same amount in the same canonical unit.
#[track_caller]
fn assert_same(a: (f64, &str), b: (f64, &str)) {
    let (ca, cb) = (canon(a.0, a.1), canon(b.0, b.1));
    assert_eq!(ca.unit, cb.unit, "{a:?} vs {b:?}");
    assert!(close(ca.value, cb.value), "{a:?} = {} vs {b:?} = {}", ca.value, cb.value);
}

#[test]
fn the_embedded_table_resolves_every_unit() {
    let data: Data = serde_json::from_str(UCUM_JSON).unwrap();
    let table = table();
    assert_eq!(table.base_units, ["C", "K", "cd", "g", "m", "rad", "s", "mol"]);
    // The mole moves from the defined units to the base units.
    assert_eq!(table.units.len(), data.units.len() + BASE_COUNT);
    let mut temperatures = Vec::new();
    for (code, def) in &data.units {
        match table.units[code] {
            Unit::Ratio { metric, .. } => {
                assert!(!def.arbitrary && def.special.is_none(), "{code}");
                assert_eq!(metric, def.metric, "{code}");
            }
            Unit::Temperature(_) => temperatures.push(code.as_str()),
            Unit::Unconvertible => assert!(def.arbitrary || def.special.is_some(), "{code}"),
        }
    }
    assert_eq!(temperatures, ["Cel", "[degF]", "[degRe]"]);
}

#[test]
fn mass_concentrations() {
    // 1 mg/dL = 0.01 g/L = 10 g/m3.
    assert_canonical(1.0, "mg/dL", 10.0, "g.m-3");
    assert_same((1.0, "mg/dL"), (0.01, "g/L"));
    assert_same((5.4, "mmol/L"), (5.4, "mol/m3"));
    assert_same((25.0, "kg/m2"), (2.5, "g/cm2"));
    assert_canonical(25.0, "kg/m2", 25_000.0, "g.m-2");
    assert_same((1.0, "g%"), (1.0, "g/dL"));
}

#[test]
fn mass_and_length_customary_units() {
    assert_same((1.0, "[lb_av]"), (0.45359237, "kg"));
    assert_canonical(1.0, "kg", 1000.0, "g");
    assert_canonical(1.0, "[in_i]", 0.0254, "m");
    assert_same((1.0, "[in_i]"), (2.54, "cm"));
    assert_same((1.0, "[ft_i]"), (0.3048, "m"));
    assert_same((1.0, "[oz_av]"), (28.349523125, "g"));
}

#[test]
fn volumes() {
    assert_same((1.0, "L"), (1.0, "dm3"));
    assert_same((1.0, "l"), (1000.0, "cm3"));
    assert_canonical(1.0, "mL", 1e-6, "m3");
    assert_same((1.0, "[gal_us]"), (3.785411784, "L"));
}

#[test]
fn pressure() {
    // 1 mmHg = 133.322 Pa; UCUM's base for mass is the gram, so 1 Pa = 1000 g.m-1.s-2.
    assert_canonical(1.0, "mm[Hg]", 133_322.0, "g.m-1.s-2");
    assert_same((1.0, "mm[Hg]"), (0.133322, "kPa"));
    assert_same((1.0, "Pa"), (1.0, "N/m2"));
    assert_same((1.0, "Pa"), (1.0, "kg/(m.s2)"));
    assert_same((1.0, "kg/(m.s2)"), (1.0, "kg/m/s2"));
}

#[test]
fn temperatures() {
    assert_canonical(37.0, "Cel", 310.15, "K");
    assert_same((37.0, "Cel"), (310.15, "K"));
    assert_same((98.6, "[degF]"), (37.0, "Cel"));
    assert_same((32.0, "[degF]"), (0.0, "Cel"));
    assert_same((-40.0, "[degF]"), (-40.0, "Cel"));
    assert_same((80.0, "[degRe]"), (100.0, "Cel"));
    // The Rankine is a ratio unit: degrees Fahrenheit counted from absolute zero.
    assert_same((491.67, "[degR]"), (273.15, "K"));
    assert_same((37.0, "Cel{rectal}"), (37.0, "Cel"));
    // An offset scale means nothing as a factor or with a prefix.
    for code in ["Cel/h", "mCel", "Cel2", "/Cel", "(Cel)", "2.Cel", "Cel{x", "Cel{a}{b}", "[degF].m"] {
        assert_eq!(canonical(1.0, code), None, "{code}");
    }
}

#[test]
fn rates_and_annotations() {
    assert_canonical(60.0, "/min", 1.0, "s-1");
    assert_same((72.0, "{beats}/min"), (72.0, "/min"));
    assert_same((72.0, "{beats}/min"), (1.2, "Hz"));
    assert_same((12.0, "/min{breaths}"), (12.0, "/min"));
    assert_canonical(3.0, "{rbc}", 3.0, "1");
    assert_same((1.0, "mL/min/kg"), (1.0, "mL/(min.kg)"));
    assert_same((1.0, "/[pi].A/m"), (1.0 / std::f64::consts::PI, "A/m"));
    assert_same((1.0, "Oe"), (250.0 / std::f64::consts::PI, "A/m"));
}

#[test]
fn counts_and_dimensionless() {
    assert_canonical(4.5, "10*3/uL", 4.5e12, "m-3");
    assert_same((4.5, "10*3/uL"), (4.5, "10*9/L"));
    assert_same((4.5, "10*3/uL"), (4.5e6, "/mL"));
    assert_canonical(50.0, "%", 0.5, "1");
    assert_canonical(3.0, "1", 3.0, "1");
    assert_canonical(2.0, "10*-3", 0.002, "1");
    assert_canonical(1.0, "[ppm]", 1e-6, "1");
    assert_same((1.0, "10*3"), (1.0, "10^3"));
    assert_same((1.0, "2.5.m"), (10.0, "m"));
}

#[test]
fn prefixes_and_exponents() {
    assert_canonical(1.0, "dam", 10.0, "m");
    assert_canonical(1.0, "cm2", 1e-4, "m2");
    assert_same((1.0, "m+2"), (1.0, "m2"));
    assert_same((1.0, "s-1"), (1.0, "/s"));
    assert_same((1.0, "m0"), (1.0, "1"));
    assert_same((1.0, "Kibit"), (1024.0, "bit"));
    assert_same((1.0, "ug"), (1e-9, "kg"));
    assert_same((1.0, "[in_i]2"), (6.4516, "cm2"));
    assert_same((1.0, "cd"), (1.0, "cd")); // candela, not centi-day
                                           // Amount of substance is kept as its own dimension (see `MOLE`).
    assert_canonical(1.0, "mmol", 1e-3, "mol");
    assert_canonical(1.0, "kat", 1.0, "s-1.mol");
    assert_ne!(canonical(1.0, "mmol/L").unwrap().unit, canonical(1.0, "10*3/uL").unwrap().unit);
}

#[test]
fn canonical_units_read_back_as_themselves() {
    for code in ["mg/dL", "mm[Hg]", "kg/m2", "/min", "%", "Cel", "10*3/uL", "[psi]", "J/(mol.K)", "cd/m2", "sr"] {
        let c = canon(1.0, code);
        assert_eq!(canon(c.value, &c.unit), c, "{code}");
    }
}

#[test]
fn invalid_or_unconvertible_codes_give_none() {
    for code in [
        "",
        "xyz",
        "m//s",
        "{unclosed",
        "unclosed}",
        "m/",
        "/",
        ".",
        "m.",
        ".m",
        "m..s",
        "(m",
        "m)",
        "()",
        "m s",
        " m",
        "m ",
        "KG",
        "k",
        "mg/dl{",
        "{a{b}}",
        "{a}2",
        "m{a}2",
        "2{x}",
        "m-",
        "-1",
        "m2-",
        "[in_i",
        "in_i]",
        "k[lb_av]",
        "10*999",
        "m2147483648",
        "µg",
        "m{ünits}",
        "{a b}",
        "[iU]",
        "[IU]/L",
        "k[IU]",
        "[arb'U]",
        "[CFU]/mL",
        "[pH]",
        "B[SPL]",
        "Np",
        "[p'diop]",
        "mL/[iU]",
    ] {
        assert_eq!(canonical(1.0, code), None, "{code:?}");
    }
    assert_eq!(canonical(1.0, &format!("{}m{}", "(".repeat(100), ")".repeat(100))), None);
    assert!(canonical(1.0, &format!("{}m{}", "(".repeat(10), ")".repeat(10))).is_some());
    assert_eq!(canonical(f64::INFINITY, "m"), None);
    assert_eq!(canonical(f64::NAN, "m"), None);
}
