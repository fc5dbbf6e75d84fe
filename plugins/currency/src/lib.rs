//! `currency`: converts `amount` (in `currency`) to USD as `amount_usd`, using the rate
//! table given in the `rates` config key. An unknown currency fails that event alone.

use std::collections::HashMap;

use sluice_sdk::{Config, Emit, Error, Event, Plugin};

const RATES_EXPECTED: &str = "a JSON object of currency code to USD rate";

struct Currency {
    rates: HashMap<String, f64>,
}

impl Plugin for Currency {
    fn init(config: &Config) -> Result<Self, Error> {
        let raw = config.require("rates", RATES_EXPECTED)?;
        let rates = serde_json::from_str(raw)
            .map_err(|e| Error::new(format!("config key \"rates\" must be {RATES_EXPECTED}: {e}")))?;
        Ok(Currency { rates })
    }

    fn reads(&self) -> Option<Vec<String>> {
        Some(vec!["amount".into(), "currency".into()])
    }

    fn process(&mut self, mut event: Event<'_>, out: &mut Emit<'_>) -> Result<(), Error> {
        let currency = event.str("currency")?.ok_or_else(|| Error::missing("currency"))?;
        let rate = *self
            .rates
            .get(currency)
            .ok_or_else(|| Error::new(format!("unknown currency \"{currency}\"")))?;
        let usd = event.f64("amount")?.map(|amount| amount * rate);
        event.set("amount_usd", usd);
        out.emit(event);
        Ok(())
    }
}

sluice_sdk::export!(Currency);
