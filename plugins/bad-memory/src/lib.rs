//! Test-only: a plugin that uses as much as it is told to. For each event: `megabytes`
//! allocates that many MiB (touching every page); `blob_kb` adds a field `blob` of that many
//! KiB; `copies` emits the event that many times (default once).
use sluice_sdk::{Config, Emit, Error, Event, Plugin};

struct Hog;

impl Plugin for Hog {
    fn init(_config: &Config) -> Result<Self, Error> {
        Ok(Hog)
    }

    fn process(&mut self, mut event: Event<'_>, out: &mut Emit<'_>) -> Result<(), Error> {
        if let Some(mb) = event.i64("megabytes")? {
            let block = vec![1u8; (mb as usize) << 20];
            std::hint::black_box(&block);
        }
        if let Some(kb) = event.i64("blob_kb")? {
            event.set("blob", "x".repeat(kb as usize * 1024));
        }
        let copies = event.i64("copies")?.unwrap_or(1);
        for _ in 1..copies {
            out.emit(event.clone());
        }
        out.emit(event);
        Ok(())
    }
}

sluice_sdk::export!(Hog);
