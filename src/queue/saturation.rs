//! The saturation signal: how late the runtime runs a periodic tick.
//!
//! A task of the layer sleeps [`interval`](SaturationSignal::interval) at a time and measures
//! how late it wakes up: the *runtime lag*. On an idle or busy-but-keeping-up runtime the lag is
//! the timer's granularity (under 1 ms); when CPU-bound tasks fill the workers, the tick waits
//! in the run queue behind them, exactly as a newly arrived request does, so the lag is the
//! delay every new request meets before its first poll. Heads coming back fast say nothing about
//! this: a streamed response answers its head at once and then keeps the CPU for seconds.
//!
//! The lag is smoothed (an exponentially weighted mean), and judged with hysteresis: the runtime
//! is *saturated* once the mean has been at or above [`enter`](SaturationSignal::enter) for
//! [`ENTER_TICKS`] ticks in a row, and stays so until the mean falls below
//! [`exit`](SaturationSignal::exit) (a lower value). One late tick (a page fault, a short burst)
//! moves the mean by a fraction only; the band between `exit` and `enter` keeps the state from
//! flapping around one threshold.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Weak;
use std::time::Duration;

use tokio::time::Instant;

use crate::error::ConfigError;

/// Ticks in a row with the smoothed lag at or above `enter` before the runtime counts as
/// saturated: a single late tick is not a trend.
pub(crate) const ENTER_TICKS: u32 = 3;

/// Weight of a new lag sample in the smoothed mean.
const SMOOTHING: f64 = 0.25;

/// The runtime-lag saturation signal of a [`PriorityQueueLayer`](super::PriorityQueueLayer):
/// passed to [`saturation`](super::PriorityQueueBuilder::saturation).
///
/// While the runtime is saturated, the adaptive limit does not grow and is cut by a fifth once
/// per drain (see the [module docs](super)), and admitted bodies of the lower classes are paced
/// ([`pacing`](super::PriorityQueueBuilder::pacing)).
///
/// ```
/// use std::time::Duration;
/// use tower_perf::queue::{AdaptiveLimit, PriorityQueueLayer, SaturationSignal};
///
/// let layer = PriorityQueueLayer::builder()
///     .adaptive_limit(AdaptiveLimit::gradient().min(8))
///     .saturation(
///         SaturationSignal::runtime_lag()
///             .interval(Duration::from_millis(10))
///             .enter(Duration::from_millis(5))
///             .exit(Duration::from_millis(2)),
///     )
///     .build()
///     .unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SaturationSignal {
    interval: Duration,
    enter: Duration,
    exit: Duration,
}

impl SaturationSignal {
    /// The runtime-lag signal. Defaults: a tick every 10 ms, saturated from a smoothed lag of
    /// 5 ms, no longer below 2 ms.
    pub fn runtime_lag() -> Self {
        Self {
            interval: Duration::from_millis(10),
            enter: Duration::from_millis(5),
            exit: Duration::from_millis(2),
        }
    }

    /// How often the tick runs, between 1 ms and 1 s.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// The smoothed lag from which the runtime counts as saturated; above the timer's
    /// granularity (at least 2 ms).
    pub fn enter(mut self, lag: Duration) -> Self {
        self.enter = lag;
        self
    }

    /// The smoothed lag below which it no longer does: below `enter`.
    pub fn exit(mut self, lag: Duration) -> Self {
        self.exit = lag;
        self
    }

    pub(crate) fn tick(&self) -> Duration {
        self.interval
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let field = "saturation";
        if !(Duration::from_millis(1)..=Duration::from_secs(1)).contains(&self.interval) {
            return Err(ConfigError::new(
                field,
                "interval must be between 1 ms and 1 s",
            ));
        }
        if self.enter < Duration::from_millis(2) || self.enter > Duration::from_secs(10) {
            return Err(ConfigError::new(
                field,
                "enter must be between 2 ms and 10 s",
            ));
        }
        if self.exit.is_zero() || self.exit >= self.enter {
            return Err(ConfigError::new(
                field,
                "exit must be greater than zero and below enter",
            ));
        }
        Ok(())
    }
}

/// The smoothed lag and the saturated state, readable without the queue's lock (the paced
/// bodies read it on every frame).
#[derive(Debug)]
pub(crate) struct Signal {
    config: SaturationSignal,
    /// Smoothed lag in microseconds.
    lag_us: AtomicU64,
    saturated: AtomicBool,
    /// Whether the tick task was started (once, by the first request inside a runtime).
    started: AtomicBool,
}

/// What one tick changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick {
    pub(crate) saturated: bool,
    /// The state flipped on this tick.
    pub(crate) changed: bool,
}

impl Signal {
    pub(crate) fn new(config: SaturationSignal) -> Self {
        Self {
            config,
            lag_us: AtomicU64::new(0),
            saturated: AtomicBool::new(false),
            started: AtomicBool::new(false),
        }
    }

    pub(crate) fn saturated(&self) -> bool {
        self.saturated.load(Ordering::Relaxed)
    }

    /// The smoothed lag.
    pub(crate) fn lag(&self) -> Duration {
        Duration::from_micros(self.lag_us.load(Ordering::Relaxed))
    }

    /// Folds one tick's lag in; `above` counts the ticks in a row at or above `enter` (kept by
    /// the tick task, the only writer).
    pub(crate) fn observe(&self, lag: Duration, above: &mut u32) -> Tick {
        let prev = self.lag_us.load(Ordering::Relaxed) as f64;
        let sample = lag.as_micros().min(u128::from(u32::MAX)) as f64;
        let mean = prev * (1.0 - SMOOTHING) + sample * SMOOTHING;
        self.lag_us.store(mean as u64, Ordering::Relaxed);
        let mean = Duration::from_micros(mean as u64);
        let was = self.saturated();
        *above = if mean >= self.config.enter {
            above.saturating_add(1)
        } else {
            0
        };
        let now = if was {
            mean >= self.config.exit
        } else {
            *above >= ENTER_TICKS
        };
        self.saturated.store(now, Ordering::Relaxed);
        Tick {
            saturated: now,
            changed: now != was,
        }
    }

    /// Whether the caller is the first to ask: it then starts the tick task.
    pub(crate) fn claim_start(&self) -> bool {
        !self.started.load(Ordering::Relaxed) && !self.started.swap(true, Ordering::Relaxed)
    }
}

/// What the tick task reports to: the queue's shared state, held weakly so that the task ends
/// once the layer and every service made from it are dropped.
pub(crate) trait OnTick: Send + Sync + 'static {
    /// The signal to feed.
    fn signal(&self) -> &Signal;
    /// Called after each tick with what it changed, at `now`.
    fn on_tick(&self, tick: Tick, now: Instant);
}

/// The tick task: sleeps one interval, measures how late it woke, reports; ends when the
/// state it reports to is gone.
pub(crate) async fn run<T: OnTick>(target: Weak<T>, interval: Duration) {
    let mut above = 0;
    let mut due = Instant::now() + interval;
    loop {
        tokio::time::sleep_until(due).await;
        let now = Instant::now();
        let Some(t) = target.upgrade() else { return };
        let tick = t
            .signal()
            .observe(now.saturating_duration_since(due), &mut above);
        t.on_tick(tick, now);
        drop(t);
        due = now + interval;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn feed(s: &Signal, lags: &[u64], above: &mut u32) -> Vec<bool> {
        lags.iter()
            .map(|&l| s.observe(ms(l), above).saturated)
            .collect()
    }

    #[test]
    fn one_late_tick_is_not_saturation() {
        let s = Signal::new(SaturationSignal::runtime_lag());
        let mut above = 0;
        // A 30 ms stall once, between ticks on time.
        let states = feed(&s, &[0, 0, 30, 0, 0, 0, 0, 0], &mut above);
        assert!(states.iter().all(|&b| !b), "{states:?}");
    }

    #[test]
    fn a_standing_lag_enters_and_hysteresis_holds_it() {
        let s = Signal::new(SaturationSignal::runtime_lag());
        let mut above = 0;
        // 20 ms late on every tick: the mean climbs past 5 ms, three ticks in a row.
        let states = feed(&s, &[20; 8], &mut above);
        assert!(!states[0] && states[7], "{states:?}");
        // Between exit (2 ms) and enter (5 ms): stays saturated.
        let states = feed(&s, &[3; 40], &mut above);
        assert!(states.iter().all(|&b| b), "{states:?}");
        // Back on time: leaves, and stays out at lags between exit and enter.
        let states = feed(&s, &[0; 20], &mut above);
        assert!(!states[19]);
        let states = feed(&s, &[3; 40], &mut above);
        assert!(states.iter().all(|&b| !b), "{states:?}");
    }

    #[test]
    fn idle_timer_granularity_never_saturates() {
        let s = Signal::new(SaturationSignal::runtime_lag());
        let mut above = 0;
        let lags: Vec<u64> = (0..10_000).map(|i| i % 2).collect();
        assert!(feed(&s, &lags, &mut above).iter().all(|&b| !b));
        assert!(s.lag() <= ms(1));
    }

    #[test]
    fn bad_configuration_is_refused() {
        let s = SaturationSignal::runtime_lag();
        assert!(s.validate().is_ok());
        assert!(s.interval(Duration::ZERO).validate().is_err());
        assert!(s.enter(ms(1)).validate().is_err());
        assert!(s.exit(ms(5)).validate().is_err());
        assert!(s.exit(Duration::ZERO).validate().is_err());
    }

    /// The tick task measures how late it wakes, with the paused clock: a worker blocked for
    /// 50 ms makes that tick 50 ms late.
    #[tokio::test(start_paused = true)]
    async fn the_tick_measures_how_late_it_runs() {
        struct Probe(Signal, std::sync::Mutex<Vec<bool>>);
        impl OnTick for Probe {
            fn signal(&self) -> &Signal {
                &self.0
            }
            fn on_tick(&self, tick: Tick, _now: Instant) {
                self.1.lock().unwrap().push(tick.saturated);
            }
        }
        let p = std::sync::Arc::new(Probe(
            Signal::new(SaturationSignal::runtime_lag()),
            Default::default(),
        ));
        let task = tokio::spawn(run(std::sync::Arc::downgrade(&p), ms(10)));
        tokio::time::sleep(ms(100)).await;
        assert!(!p.0.saturated());
        // The clock moves while the tick cannot run: it wakes late.
        for _ in 0..6 {
            tokio::time::advance(ms(40)).await;
            tokio::task::yield_now().await;
        }
        assert!(p.0.saturated(), "lag {:?}", p.0.lag());
        drop(p);
        tokio::time::sleep(ms(50)).await;
        assert!(task.is_finished());
    }
}
