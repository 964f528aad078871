//! Arbitrary text as a lifecycle rules file: parsing either fails with an error or yields rules
//! that print back to TOML and parse again to the same rules.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(rules) = patron_lifecycle::Rules::from_toml_str(text) {
        let printed = toml::to_string(&rules).expect("accepted rules print as TOML");
        let back = patron_lifecycle::Rules::from_toml_str(&printed)
            .unwrap_or_else(|e| panic!("printed rules do not parse: {e}\n{printed}"));
        assert_eq!(back, rules, "rules changed through print and parse");
    }
});
