//! One connection's gate on a history room. While the connection's `join`
//! reads the store, the room's live messages are buffered for it (the
//! recovery merge of `history/recovery.rs`); once the join is answered, a
//! watermark lets through only newer offsets. So every member receives a
//! history room's messages exactly once and in offset order, across the
//! replay/live boundary.
//!
//! The gate's lock is held while the join's answer is queued, so no live
//! message can slip in between the replay, the `ok` and what follows it.
//!
//! The same merge repairs an open gate after the bus connection dropped
//! (RePublished messages sent meanwhile never arrive): the gate is suspended
//! at its watermark, and once the bus is back the store is read after it
//! (`Hub::repair_room`).

use std::sync::{Mutex, MutexGuard};

use super::frame::Frame;
use super::outbound::{Outbound, Pushed};
use crate::history::recovery::{Join, Outcome, Overflow, Read, Since, Watermark};
use crate::history::{Epoch, HistoryError, HistoryStore, Store};

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

/// What [`Gate::try_admit`] decided.
#[derive(Debug)]
pub enum Admitted<'a> {
    /// Push it now; the gate stays held until this is dropped.
    Yes(Held<'a>),
    /// Not now: buffered, dropped by an overflowed gate, or not newer than
    /// the watermark.
    No,
    /// The gate is held elsewhere; nothing was decided.
    Busy,
}

/// A gate held while the message it admitted is pushed.
#[derive(Debug)]
pub struct Held<'a> {
    _gate: MutexGuard<'a, State>,
}

#[derive(Debug)]
enum State {
    /// The join is reading the store: live messages wait here.
    Reading(Join<Frame>),
    /// Was open when the bus connection dropped: live messages wait here
    /// until the store is read after the watermark (the repair).
    Suspended(Join<Frame>),
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
        admit(&mut state, mark, frame).then(|| outbound.push(frame))
    }

    /// [`Gate::offer`] for a batched fan-out, which never waits for a gate:
    /// decides whether the message is to be pushed now, and if so keeps the
    /// gate held while the caller pushes it, so that nothing (a join's
    /// answer, a repair) comes between. `Busy` when the gate is held
    /// elsewhere: offer it with [`Gate::offer`] once nothing else is held.
    pub fn try_admit(&self, mark: Mark<'_>, frame: &Frame) -> Admitted<'_> {
        let mut state = match self.0.try_lock() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Admitted::Busy,
        };
        if admit(&mut state, mark, frame) {
            Admitted::Yes(Held { _gate: state })
        } else {
            Admitted::No
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
            // Answered already (never happens: one join finishes once); a
            // suspended gate is the repair's to resume.
            other @ (State::Open(_) | State::Suspended(_)) => {
                *state = other;
                return Ok(());
            }
        };
        open(&mut state, join, read, answer);
        Ok(())
    }

    /// Holds live messages back from an open gate, buffering at most
    /// `capacity`: the bus connection dropped, so messages are being missed
    /// that the store still has. Returns what the store must be read after;
    /// `None` when the gate was not open (a join in progress reads the store
    /// itself, after the bus is back).
    pub fn suspend(&self, capacity: usize) -> Option<Since> {
        let mut state = self.lock();
        let State::Open(watermark) = &*state else {
            return None;
        };
        let position = watermark.position();
        let since = Since {
            offset: position.offset,
            epoch: position.epoch.clone(),
        };
        *state = State::Suspended(Join::new(Some(since.clone()), capacity));
        Some(since)
    }

    /// Where a suspended gate must be read from; `None` when it is not suspended.
    pub fn suspended_since(&self) -> Option<Since> {
        match &*self.lock() {
            State::Suspended(join) => join.since().cloned(),
            _ => None,
        }
    }

    /// Ends a suspension with the store's `read` (after the suspension's
    /// `since`, or earlier): hands the outcome to `answer` with the gate
    /// locked, then opens the gate. The outcome's `recovered` says whether
    /// the store still had everything missed. `Err` when more arrived
    /// meanwhile than the gate could hold; `Ok(false)` when the gate was not
    /// suspended (nothing is done).
    pub fn resume(
        &self,
        read: Read<Frame>,
        answer: impl FnOnce(&Outcome<Frame>),
    ) -> Result<bool, Overflow> {
        let mut state = self.lock();
        match std::mem::replace(&mut *state, State::Overflowed(Overflow(0))) {
            State::Suspended(join) => {
                open(&mut state, join, read, answer);
                Ok(true)
            }
            State::Overflowed(overflow) => {
                *state = State::Overflowed(overflow);
                Err(overflow)
            }
            other => {
                *state = other;
                Ok(false)
            }
        }
    }
}

/// Whether the live message at `mark` is to be pushed now: buffered while
/// the join reads (or the repair waits), dropped by an overflowed gate,
/// passed when newer than an open gate's watermark (which moves).
fn admit(state: &mut State, mark: Mark<'_>, frame: &Frame) -> bool {
    match state {
        State::Reading(join) | State::Suspended(join) => {
            if let Err(overflow) = join.live(mark.epoch, mark.offset, frame.share()) {
                *state = State::Overflowed(overflow);
            }
            false
        }
        State::Overflowed(_) => false,
        State::Open(watermark) => watermark.admit(mark.epoch, mark.offset),
    }
}

/// Decides `join` from `read`, hands the outcome to `answer` and opens the
/// gate at its watermark (the gate locked throughout).
fn open(
    state: &mut State,
    join: Join<Frame>,
    read: Read<Frame>,
    answer: impl FnOnce(&Outcome<Frame>),
) {
    let outcome = join.finish(read);
    answer(&outcome);
    *state = State::Open(outcome.watermark.clone());
}

/// What the store keeps of `room` after `offset`, as `message` frames with
/// their offsets, and whether nothing after it was dropped: what a join with
/// `since` and a repair merge with the live messages.
pub async fn read_after(
    store: &Store,
    room: &str,
    offset: u64,
) -> Result<Read<Frame>, HistoryError> {
    let page = store.after(room, offset, usize::MAX).await?;
    let epoch = page.position.epoch.as_str();
    let messages = page
        .messages
        .iter()
        .map(|m| (m.offset, Frame::stored(&m.payload, m.offset, epoch)))
        .collect();
    Ok(Read {
        position: page.position,
        complete: page.complete,
        messages,
    })
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

    /// A gate opened at `offset` of `epoch` (a join without `since` answered).
    fn open_at(epoch: &Epoch, offset: u64) -> Gate {
        let gate = Gate::reading(Join::new(None, 8));
        let read = Read {
            position: Position {
                offset,
                epoch: epoch.clone(),
            },
            complete: true,
            messages: Vec::new(),
        };
        gate.finish(read, |_| {}).unwrap();
        gate
    }

    #[test]
    fn try_admit_decides_as_offer_does_and_never_waits() {
        let epoch = Epoch::new("E");
        let mark = |offset| Mark {
            epoch: &epoch,
            offset,
        };
        let reading = Gate::reading(Join::new(None, 8));
        assert!(
            matches!(reading.try_admit(mark(1), &frame(1)), Admitted::No),
            "buffered"
        );
        let gate = open_at(&epoch, 3);
        assert!(
            matches!(gate.try_admit(mark(3), &frame(3)), Admitted::No),
            "duplicate"
        );
        let held = gate.try_admit(mark(4), &frame(4));
        assert!(matches!(held, Admitted::Yes(_)), "newer");
        assert!(
            matches!(gate.try_admit(mark(5), &frame(5)), Admitted::Busy),
            "held while its push is made"
        );
        drop(held);
        let (out, wire) = outbound();
        assert!(
            gate.offer(mark(4), &frame(4), &out).is_none(),
            "the mark moved"
        );
        assert!(matches!(
            gate.try_admit(mark(5), &frame(5)),
            Admitted::Yes(_)
        ));
        assert!(
            wire.0.lock().unwrap().is_empty(),
            "try_admit pushes nothing itself"
        );
    }

    #[test]
    fn a_suspended_gate_replays_what_the_bus_missed_before_what_came_after() {
        let epoch = Epoch::new("E");
        let (out, wire) = outbound();
        let gate = open_at(&epoch, 0);
        let mark = |offset| Mark {
            epoch: &epoch,
            offset,
        };
        assert!(gate.offer(mark(1), &frame(1), &out).is_some());
        // The bus drops: 2 and 3 are RePublished meanwhile and lost; 4 comes
        // live once it is back, before the store has answered.
        let since = gate.suspend(8).expect("an open gate suspends");
        assert_eq!(since.offset, 1);
        assert_eq!(gate.suspended_since(), Some(since));
        assert!(gate.offer(mark(4), &frame(4), &out).is_none(), "held back");
        assert!(gate.suspend(8).is_none(), "suspended once");
        let read = Read {
            position: Position {
                offset: 4,
                epoch: epoch.clone(),
            },
            complete: true,
            messages: vec![(2, frame(2)), (3, frame(3)), (4, frame(4))],
        };
        let mut recovered = None;
        let resumed = gate.resume(read, |outcome| {
            recovered = outcome.recovered;
            for f in outcome.before_ok.iter().chain(&outcome.after_ok) {
                out.push(f);
            }
        });
        assert_eq!(resumed, Ok(true));
        assert_eq!(recovered, Some(true));
        assert!(gate.offer(mark(4), &frame(4), &out).is_none(), "duplicate");
        assert!(gate.offer(mark(5), &frame(5), &out).is_some());
        assert_eq!(*wire.0.lock().unwrap(), ["m1", "m2", "m3", "m4", "m5"]);
        assert_eq!(gate.suspended_since(), None);
    }

    #[test]
    fn a_gap_the_store_no_longer_keeps_is_not_recovered() {
        let epoch = Epoch::new("E");
        let gate = open_at(&epoch, 7);
        gate.suspend(8).expect("suspended");
        let read = Read {
            position: Position {
                offset: 30,
                epoch: epoch.clone(),
            },
            complete: false,
            messages: vec![(29, frame(29)), (30, frame(30))],
        };
        let mut outcome = None;
        assert_eq!(
            gate.resume(read, |o| outcome = Some((o.recovered, o.before_ok.len()))),
            Ok(true)
        );
        assert_eq!(outcome, Some((Some(false), 0)), "nothing replayed: rejoin");
    }

    #[test]
    fn only_open_gates_suspend_and_only_suspended_ones_resume() {
        let epoch = Epoch::new("E");
        let (out, _) = outbound();
        let reading = Gate::reading(Join::new(None, 8));
        assert!(
            reading.suspend(8).is_none(),
            "a join in progress reads itself"
        );
        let read = |offset| Read {
            position: Position {
                offset,
                epoch: epoch.clone(),
            },
            complete: true,
            messages: Vec::new(),
        };
        assert_eq!(reading.resume(read(0), |_| panic!("not ours")), Ok(false));
        let open = open_at(&epoch, 3);
        assert_eq!(open.resume(read(3), |_| panic!("not suspended")), Ok(false));
        // Suspended, then more arrives than it may hold: the repair fails.
        let full = open_at(&epoch, 0);
        full.suspend(1).expect("suspended");
        for offset in 1..=2 {
            let mark = Mark {
                epoch: &epoch,
                offset,
            };
            assert!(full.offer(mark, &frame(offset), &out).is_none());
        }
        assert_eq!(
            full.resume(read(2), |_| panic!("overflowed")),
            Err(Overflow(1))
        );
    }
}
