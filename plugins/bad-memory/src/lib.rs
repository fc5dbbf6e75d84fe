//! Test-only: allocates `megabytes` MiB (touching every page) for each event that has that
//! field, then passes the event through.
use sluice_sdk::{Config, Emit, Error, Event, Plugin};

struct Hog;

impl Plugin for Hog {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Hog)
    }

    fn process(&mut self, event: Event<'_>, out: &mut Emit<'_>) -> Result<(), Error> {
        if let Some(mb) = event.i64("megabytes")? {
            let block = vec![1u8; (mb as usize) << 20];
            std::hint::black_box(&block);
        }
        out.emit(event);
        Ok(())
    }
}

sluice_sdk::export!(Hog);
