//! Test-only: a pass-through plugin built against `sluice:plugin@0.2.0`, a major version the
//! host does not support; deploying it must be refused with both versions named.
wit_bindgen::generate!({ path: "wit", world: "transform" });

use exports::sluice::plugin::transformer::Guest;
use sluice::plugin::types::{Batch, Processed};

struct PassThrough;

impl Guest for PassThrough {
    fn init(_config: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn process(batch: Batch) -> Processed {
        let outcomes = batch.events.into_iter().map(|e| Ok(vec![e])).collect();
        Processed {
            fields: batch.fields,
            outcomes,
        }
    }
}

export!(PassThrough);
