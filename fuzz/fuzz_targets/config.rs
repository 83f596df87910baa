//! Volley's config file: TOML text parsed into a `Config` and checked
//! (`Config::from_toml`, what `volley --config FILE` and a reload run).
//!
//! Input: any bytes; those that are not UTF-8 are skipped, as reading the
//! file as text refuses them before the parser runs.
//!
//! A failure is a panic, or an accepted config that fails its own checks
//! (`Config::problems`), or a refusal with no problem listed. A config with
//! mistakes is fine: it is refused with a list of them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use volley_engine::Config;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    match Config::from_toml(text) {
        Ok(config) => {
            let problems = config.problems();
            assert!(problems.is_empty(), "accepted, yet: {problems:?}");
            let _ = config.shard_count();
            let _ = config.rules_in_force();
        }
        Err(errors) => assert!(!errors.is_empty(), "refused with no reason"),
    }
});
