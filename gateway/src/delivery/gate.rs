//! One connection's gate on a history room. While the connection's `join`
//! reads the store, the room's live messages are buffered for it (the
//! recovery merge of `history/recovery.rs`); once the join is answered, a
//! watermark lets through only newer offsets. So every member receives a
//! history room's messages exactly once and in offset order, across the
//! replay/live boundary.
//!
//! The gate's lock is held while the join's answer is queued, so no live
//! message can slip in between the replay, the `ok` and what follows it.

use std::sync::Mutex;

use super::frame::Frame;
use super::outbound::{Outbound, Pushed};
use crate::history::Epoch;
use crate::history::recovery::{Join, Outcome, Overflow, Read, Watermark};

/// Where a stored message sits in its room's history.
#[derive(Debug, Clone, Copy)]
pub struct Mark<'a> {
    /// The room's epoch when it was stored.
    pub epoch: &'a Epoch,
    /// Its offset.
    pub offset: u64,
}

/// A connection's gate on one history room.
#[derive(Debug)]
pub struct Gate(Mutex<State>);

#[derive(Debug)]
enum State {
    /// The join is reading the store: live messages wait here.
    Reading(Join<Frame>),
    /// More live messages came during the read than the join may hold.
    Overflowed(Overflow),
    /// Answered: live messages newer than the watermark pass.
    Open(Watermark),
}

impl Gate {
    /// A gate for a join that is about to read the store.
    pub fn reading(join: Join<Frame>) -> Self {
        Self(Mutex::new(State::Reading(join)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every transition is one assignment: a poisoned state is consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Offers a live message to the connection behind `outbound`: buffered
    /// while the join reads, pushed when newer than the watermark once
    /// answered. `None` when it was not pushed (yet).
    pub fn offer(&self, mark: Mark<'_>, frame: &Frame, outbound: &Outbound) -> Option<Pushed> {
        let mut state = self.lock();
        match &mut *state {
            State::Reading(join) => {
                if let Err(overflow) = join.live(mark.epoch, mark.offset, frame.share()) {
                    *state = State::Overflowed(overflow);
                }
                None
            }
            State::Overflowed(_) => None,
            State::Open(watermark) => watermark
                .admit(mark.epoch, mark.offset)
                .then(|| outbound.push(frame)),
        }
    }

    /// Decides the join from the store's `read` and hands the outcome to
    /// `answer` (which queues the replay, the `ok` and what follows) with
    /// the gate locked; then opens the gate at the outcome's watermark.
    pub fn finish(
        &self,
        read: Read<Frame>,
        answer: impl FnOnce(&Outcome<Frame>),
    ) -> Result<(), Overflow> {
        let mut state = self.lock();
        let join = match std::mem::replace(&mut *state, State::Overflowed(Overflow(0))) {
            State::Reading(join) => join,
            State::Overflowed(overflow) => {
                *state = State::Overflowed(overflow);
                return Err(overflow);
            }
            // Answered already (never happens: one join finishes once).
            State::Open(watermark) => {
                *state = State::Open(watermark);
                return Ok(());
            }
        };
        let outcome = join.finish(read);
        answer(&outcome);
        *state = State::Open(outcome.watermark.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::{self, IoSlice};
    use std::sync::Arc;

    use super::*;
    use crate::delivery::frame::Format;
    use crate::delivery::outbound::{QueueLimits, Wire};
    use crate::history::Position;
    use crate::metrics::Metrics;

    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<String>>);

    impl Wire for Recorder {
        fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
            let bytes: Vec<u8> = bufs.iter().flat_map(|b| b.iter().copied()).collect();
            // Frames here are short: a 2-byte WebSocket header.
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(&bytes[2..]).into_owned());
            Ok(bytes.len())
        }
    }

    fn outbound() -> (Outbound, Arc<Recorder>) {
        let wire = Arc::new(Recorder::default());
        let out = Outbound::new(
            QueueLimits {
                frames: 64,
                bytes: 1 << 20,
            },
            Arc::new(Metrics::default()),
            wire.clone(),
            Format::WebSocketText,
        );
        (out, wire)
    }

    fn frame(offset: u64) -> Frame {
        Frame::new(format!("m{offset}"))
    }

    #[test]
    fn buffers_while_reading_then_answers_in_order_and_drops_duplicates() {
        let epoch = Epoch::new("E");
        let (out, wire) = outbound();
        let gate = Gate::reading(Join::new(None, 8));
        let mark = |offset| Mark {
            epoch: &epoch,
            offset,
        };
        assert!(gate.offer(mark(4), &frame(4), &out).is_none());
        assert!(gate.offer(mark(5), &frame(5), &out).is_none());
        let read = Read {
            position: Position {
                offset: 4,
                epoch: epoch.clone(),
            },
            complete: true,
            messages: Vec::new(),
        };
        gate.finish(read, |outcome| {
            out.push(&Frame::new(format!("ok{}", outcome.position.offset)));
            for f in &outcome.after_ok {
                out.push(f);
            }
        })
        .unwrap();
        assert!(gate.offer(mark(5), &frame(5), &out).is_none(), "duplicate");
        assert!(gate.offer(mark(6), &frame(6), &out).is_some());
        assert_eq!(*wire.0.lock().unwrap(), ["ok4", "m5", "m6"]);
    }

    #[test]
    fn an_overflow_fails_the_join() {
        let epoch = Epoch::new("E");
        let (out, _) = outbound();
        let gate = Gate::reading(Join::new(None, 1));
        for offset in 1..=3 {
            gate.offer(
                Mark {
                    epoch: &epoch,
                    offset,
                },
                &frame(offset),
                &out,
            );
        }
        let read = Read {
            position: Position { offset: 0, epoch },
            complete: true,
            messages: Vec::new(),
        };
        assert_eq!(gate.finish(read, |_| panic!("no answer")), Err(Overflow(1)));
    }
}
