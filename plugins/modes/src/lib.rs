//! Test-only: exercises every SDK behaviour, chosen by the event's `mode` field; written
//! the same way in Python (`modes-py`) and JavaScript (`modes-js`) so a test can check that
//! the three SDKs agree. keep | drop | split | fail | add | clear | rekey.
use sluice_sdk::{Config, Emit, Error, Event, Plugin};

struct Modes;

impl Plugin for Modes {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Modes)
    }

    fn process(&mut self, mut event: Event<'_>, out: &mut Emit<'_>) -> Result<(), Error> {
        match event.str("mode")?.unwrap_or("keep") {
            "drop" => {}
            "split" => {
                let mut second = event.clone();
                event.set("part", 1i64);
                second.set("part", 2i64);
                out.emit(event);
                out.emit(second);
            }
            "fail" => return Err(Error::new("failed on purpose")),
            "add" => {
                event.set("extra", "yes");
                out.emit(event);
            }
            "clear" => {
                event.clear("note");
                out.emit(event);
            }
            "rekey" => {
                let key = format!("{}!", event.key());
                event.set_key(key);
                event.set_time(event.time() + 1);
                out.emit(event);
            }
            _ => out.emit(event),
        }
        Ok(())
    }
}

sluice_sdk::export!(Modes);
