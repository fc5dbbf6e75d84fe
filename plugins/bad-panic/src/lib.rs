//! Test-only: panics on an event whose `mode` is `"panic"`; passes other events through.
use sluice_sdk::{Config, Emit, Error, Event, Plugin};

struct Panicky;

impl Plugin for Panicky {
    fn init(config: &Config) -> Result<Self, Error> {
        if config.get("fail_init").is_some() {
            return Err(Error::new("init refused: fail_init is set"));
        }
        Ok(Panicky)
    }

    fn process(&mut self, event: Event<'_>, out: &mut Emit<'_>) -> Result<(), Error> {
        if event.str("mode")? == Some("panic") {
            panic!("boom on event {}", event.key());
        }
        out.emit(event);
        Ok(())
    }
}

sluice_sdk::export!(Panicky);
