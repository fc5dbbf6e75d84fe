//! `risk`: adds `merchant_risk` to each event. The score comes from the online features of
//! the merchant in the feature set named by `lookup_set` (feature `risk_score`), looked up
//! once per batch for all its merchants; else from the `scores` table in the config; else
//! `default_score` (0.5 unless configured).

use std::collections::HashMap;

use sluice_sdk::{lookup, Config, Emit, Error, Event, Plugin, Value};

struct Risk {
    scores: HashMap<String, f64>,
    default_score: f64,
    lookup_set: Option<String>,
    looked_up: HashMap<String, f64>,
}

fn parse<T: serde::de::DeserializeOwned>(config: &Config, key: &str, expected: &str) -> Result<Option<T>, Error> {
    config
        .get(key)
        .map(|raw| serde_json::from_str(raw))
        .transpose()
        .map_err(|e| Error::new(format!("config key \"{key}\" must be {expected}: {e}")))
}

impl Plugin for Risk {
    fn init(config: &Config) -> Result<Self, Error> {
        Ok(Risk {
            scores: parse(config, "scores", "a JSON object of merchant to risk score")?.unwrap_or_default(),
            default_score: parse(config, "default_score", "a number")?.unwrap_or(0.5),
            lookup_set: config.get("lookup_set").map(str::to_string),
            looked_up: HashMap::new(),
        })
    }

    fn reads(&self) -> Option<Vec<String>> {
        Some(vec!["merchant".into()])
    }

    fn prepare(&mut self, events: &[Event<'_>]) -> Result<(), Error> {
        self.looked_up.clear();
        let Some(set) = &self.lookup_set else { return Ok(()) };
        let mut merchants: Vec<String> = events
            .iter()
            .filter_map(|e| e.str("merchant").ok().flatten())
            .map(str::to_string)
            .collect();
        merchants.sort_unstable();
        merchants.dedup();
        if merchants.is_empty() {
            return Ok(());
        }
        for (merchant, features) in merchants.iter().zip(lookup(set, &merchants)?) {
            let score = features.as_ref().and_then(|f| match f.get("risk_score") {
                Some(Value::Float(v)) => Some(*v),
                Some(Value::Integer(v)) => Some(*v as f64),
                _ => None,
            });
            if let Some(score) = score {
                self.looked_up.insert(merchant.clone(), score);
            }
        }
        Ok(())
    }

    fn process(&mut self, mut event: Event<'_>, out: &mut Emit<'_>) -> Result<(), Error> {
        let merchant = event.str("merchant")?.ok_or_else(|| Error::missing("merchant"))?;
        let score = self
            .looked_up
            .get(merchant)
            .or_else(|| self.scores.get(merchant))
            .copied()
            .unwrap_or(self.default_score);
        event.set("merchant_risk", score);
        out.emit(event);
        Ok(())
    }
}

sluice_sdk::export!(Risk);
