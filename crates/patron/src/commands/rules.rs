//! `patron rules` (and `patron rules diff`), and loading the rules every projecting command uses.

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use patron_domain::CustomerId;
use patron_lifecycle::{Rules, Transition};
use patron_projector::{Projection, ProjectorConfig};
use patron_store::EventStore;

use crate::cli::{DatabaseArgs, RulesArgs, RulesDiffArgs};

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

/// One customer's history under a set of rules: transitions as published, retractions applied.
type Histories = std::collections::BTreeMap<CustomerId, Vec<Transition>>;

/// Folds the whole log with `rules` in memory (nothing is written) and returns every customer's
/// stage history and the watermark reached.
async fn fold_log(
    store: &dyn EventStore,
    rules: &Rules,
) -> anyhow::Result<(Histories, Option<chrono::DateTime<chrono::Utc>>)> {
    let currency = patron_domain::Currency::from_code(&rules.currency)
        .map_err(|e| anyhow::anyhow!("rules currency: {e}"))?;
    let mut projection = Projection::new();
    let changes = patron_projector::catch_up(&mut projection, store, rules, currency, 5_000)
        .await
        .context("cannot read the event store")?;
    let mut histories = Histories::new();
    for entry in patron_projector::net_records(changes.outbox) {
        histories
            .entry(entry.customer_id)
            .or_default()
            .push(entry.transition);
    }
    Ok((histories, projection.watermark()))
}

/// `patron rules diff`: what the configured rules would change against the active generation's.
pub(crate) async fn diff(
    database: &DatabaseArgs,
    args: &RulesArgs,
    diff: &RulesDiffArgs,
) -> anyhow::Result<ExitCode> {
    let (new_rules, _) = load(args)?;
    let store = super::open_store(database).await?;
    let active =
        store.read_models().active_generation().await?.context(
            "no read models yet: there is nothing to compare with (run `patron project`)",
        )?;
    let old_rules = Rules::from_toml_str(&active.rules)
        .context("the active generation's rules no longer parse")?;
    let log = store.into_dyn();
    let (old, old_watermark) = fold_log(log.as_ref(), &old_rules).await?;
    let (new, new_watermark) = fold_log(log.as_ref(), &new_rules).await?;

    let empty = Vec::new();
    let mut changed_history = 0usize;
    let mut moves: std::collections::BTreeMap<(String, String), usize> = Default::default();
    let mut gone: std::collections::BTreeMap<String, usize> = Default::default();
    let mut added: std::collections::BTreeMap<String, usize> = Default::default();
    let mut examples = Vec::new();
    let stage = |h: &[Transition]| h.last().map_or("none", |t| t.to.as_str()).to_owned();
    let customers: std::collections::BTreeSet<&CustomerId> = old.keys().chain(new.keys()).collect();
    for customer in &customers {
        let before = old.get(*customer).unwrap_or(&empty);
        let after = new.get(*customer).unwrap_or(&empty);
        let common = before.iter().zip(after).take_while(|(a, b)| a == b).count();
        if common == before.len() && common == after.len() {
            continue;
        }
        changed_history += 1;
        for t in &before[common..] {
            *gone.entry(t.rule.clone()).or_default() += 1;
        }
        for t in &after[common..] {
            *added.entry(t.rule.clone()).or_default() += 1;
        }
        let (from, to) = (stage(before), stage(after));
        if from != to {
            *moves.entry((from, to)).or_default() += 1;
        }
        if examples.len() < diff.examples {
            examples.push((
                customer.to_string(),
                before[common..].to_vec(),
                after[common..].to_vec(),
            ));
        }
    }
    let line = |t: &Transition| {
        format!(
            "{} → {} at {} ({})",
            t.from.map_or("none", |s| s.as_str()),
            t.to.as_str(),
            t.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            t.rule
        )
    };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rules diff: the active read models (generation {}) against {}",
        active.id,
        args.rules
            .as_ref()
            .map_or("the default rules".to_owned(), |p| p.display().to_string())
    )?;
    let w = |w: Option<chrono::DateTime<chrono::Utc>>| {
        w.map_or("none".to_owned(), |w| {
            w.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        })
    };
    writeln!(
        out,
        "customers: {}; watermark {} (now) and {} (new rules)",
        customers.len(),
        w(old_watermark),
        w(new_watermark)
    )?;
    writeln!(out, "customers whose history changes: {changed_history}")?;
    let stage_changes: usize = moves.values().sum();
    writeln!(
        out,
        "customers whose current stage changes: {stage_changes}"
    )?;
    for ((from, to), n) in &moves {
        writeln!(out, "  {from} → {to}: {n}")?;
    }
    writeln!(
        out,
        "transitions that disappear: {}",
        gone.values().sum::<usize>()
    )?;
    for (rule, n) in &gone {
        writeln!(out, "  {rule}: {n}")?;
    }
    writeln!(
        out,
        "transitions that appear: {}",
        added.values().sum::<usize>()
    )?;
    for (rule, n) in &added {
        writeln!(out, "  {rule}: {n}")?;
    }
    for (customer, before, after) in &examples {
        writeln!(out, "example {customer}:")?;
        for t in before {
            writeln!(out, "  - {}", line(t))?;
        }
        for t in after {
            writeln!(out, "  + {}", line(t))?;
        }
    }
    writeln!(
        out,
        "nothing was changed; `patron rebuild --rules FILE` builds read models with these rules"
    )?;
    Ok(ExitCode::SUCCESS)
}
