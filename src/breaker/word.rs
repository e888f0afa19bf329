//! The breaker's state word: what lock-free readers need, packed so they never see a torn mix.

use super::State;

/// State, epoch and open deadline in one `u64`, so lock-free readers see them together:
/// bits 0–1 state, 2–21 epoch (wraps), 22–63 deadline in ms since `Breaker::base` (saturates).
#[derive(Debug, Clone, Copy)]
pub(super) struct Word(pub(super) u64);

impl Word {
    const EPOCH_BITS: u32 = 20;
    pub(super) const EPOCH_MASK: u64 = (1 << Self::EPOCH_BITS) - 1;
    const UNTIL_SHIFT: u32 = 2 + Self::EPOCH_BITS;
    pub(super) const UNTIL_MAX: u64 = u64::MAX >> Self::UNTIL_SHIFT;

    pub(super) fn new(state: State, epoch: u32, until_ms: u64) -> Self {
        let s = match state {
            State::Closed => 0,
            State::HalfOpen => 1,
            State::Open => 2,
        };
        Word(
            s | ((u64::from(epoch) & Self::EPOCH_MASK) << 2)
                | (until_ms.min(Self::UNTIL_MAX) << Self::UNTIL_SHIFT),
        )
    }

    pub(super) fn state(self) -> State {
        match self.0 & 3 {
            0 => State::Closed,
            1 => State::HalfOpen,
            _ => State::Open,
        }
    }

    pub(super) fn epoch(self) -> u32 {
        ((self.0 >> 2) & Self::EPOCH_MASK) as u32
    }

    pub(super) fn until_ms(self) -> u64 {
        self.0 >> Self::UNTIL_SHIFT
    }
}
