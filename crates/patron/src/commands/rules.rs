//! `patron rules`, and loading the rules every projecting command uses.

use std::process::ExitCode;

use anyhow::Context as _;
use patron_lifecycle::Rules;
use patron_projector::ProjectorConfig;

use crate::cli::RulesArgs;

/// The configured rules, checked, with their canonical TOML (what generations record, so that
/// reformatting the file is not a rules change).
pub(crate) fn load(args: &RulesArgs) -> anyhow::Result<(Rules, String)> {
    let rules = match &args.rules {
        None => Rules::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the rules file {}", path.display()))?;
            Rules::from_toml_str(&text)
                .with_context(|| format!("invalid lifecycle rules in {}", path.display()))?
        }
    };
    let canonical = toml::to_string(&rules).context("cannot write the rules as TOML")?;
    Ok((rules, canonical))
}

/// A projector configuration for the configured rules.
pub(crate) fn projector_config(args: &RulesArgs) -> anyhow::Result<ProjectorConfig> {
    let (rules, canonical) = load(args)?;
    Ok(ProjectorConfig::new(rules, canonical))
}

/// Prints the rules in force.
pub(crate) fn run(args: &RulesArgs) -> anyhow::Result<ExitCode> {
    let (_, canonical) = load(args)?;
    if args.rules.is_none() {
        #[allow(clippy::print_stdout)]
        {
            print!("{}", Rules::example_toml());
        }
    } else {
        #[allow(clippy::print_stdout)]
        {
            print!("{canonical}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
