//! Test-only: spins forever on an event whose `mode` is `"loop"`; passes other events through.
use sluice_sdk::{Config, Emit, Error, Event, Plugin};

struct Spin;

impl Plugin for Spin {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Spin)
    }

    fn process(&mut self, event: Event<'_>, out: &mut Emit<'_>) -> Result<(), Error> {
        if event.str("mode")? == Some("loop") {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        out.emit(event);
        Ok(())
    }
}

sluice_sdk::export!(Spin);
