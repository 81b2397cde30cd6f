//! Which simulcast layer a subscriber should get: the one it chose, or (Auto) the one
//! its connection carries, judged by the loss its receiver reports show. The rules are
//! the loss-based half of Google Congestion Control (draft-ietf-rmcat-gcc §6): under
//! 2 % loss the path has room, over 10 % it is overloaded. A subscriber moves one layer
//! at a time; going back up is a probe, and a probe that brings loss back waits twice
//! as long before the next one, so a viewer on a link that carries only a lower layer
//! does not flap. Pure: reports and the clock in, a step out.

use super::admission::SessionError;
use super::forward::Picture;
use super::keyframe::Want;
use super::peer::PeerRole;
use super::Core;
use std::time::{Duration, Instant};
use str0m::media::Rid;

/// Loss (fraction of packets) above which the layer is too much for the link.
pub const LOSS_DOWN: f32 = 0.10;
/// Loss above which two reports in a row also move down (a slower-building overload).
pub const LOSS_DOWN_SUSTAINED: f32 = 0.05;
/// Loss under which a report counts as clean.
pub const LOSS_CLEAN: f32 = 0.02;
/// Clean reports for this long before the first probe up. A probe onto a layer the
/// link can't carry freezes the picture until the next report moves the viewer back
/// (1–2 s): rare probes keep that cost small.
pub const PROBE_AFTER: Duration = Duration::from_secs(5);
/// The wait before a probe doubles after each failed one, up to this.
pub const PROBE_AFTER_MAX: Duration = Duration::from_secs(40);
/// A probe that has held this long succeeded: the wait starts again from
/// [`PROBE_AFTER`].
pub const PROBE_HELD: Duration = Duration::from_secs(8);
/// After a switch, reports for this long still describe the layer before it.
pub const SETTLE: Duration = Duration::from_millis(1500);

/// What a subscriber asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Choice {
    /// The layer its connection carries, decided here.
    #[default]
    Auto,
    /// This layer, whatever the loss.
    Layer(Rid),
}

/// A move the subscriber should make among the layers still sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Down,
    Up,
}

/// One subscriber's quality state.
#[derive(Debug, Clone)]
pub struct Quality {
    pub choice: Choice,
    /// Consecutive reports above [`LOSS_DOWN_SUSTAINED`].
    lossy_reports: u32,
    /// Since when every report has been clean.
    clean_since: Option<Instant>,
    probe_after: Duration,
    /// When the last step up was made (a probe, until it has held [`PROBE_HELD`]).
    probed_at: Option<Instant>,
    settle_until: Option<Instant>,
}

impl Default for Quality {
    fn default() -> Self {
        Self {
            choice: Choice::Auto,
            lossy_reports: 0,
            clean_since: None,
            probe_after: PROBE_AFTER,
            probed_at: None,
            settle_until: None,
        }
    }
}

impl Quality {
    /// A receiver report's loss for the subscriber's video. Returns the step Auto
    /// wants; the caller makes it if a layer exists that way and tells [`Self::moved`].
    pub fn on_loss(&mut self, loss: f32, now: Instant) -> Option<Step> {
        if self.choice != Choice::Auto {
            return None;
        }
        if self.settle_until.is_some_and(|t| now < t) {
            return None;
        }
        if let Some(at) = self.probed_at {
            if now.saturating_duration_since(at) >= PROBE_HELD {
                self.probed_at = None;
                self.probe_after = PROBE_AFTER;
            }
        }
        if loss >= LOSS_CLEAN {
            self.clean_since = None;
        } else if self.clean_since.is_none() {
            self.clean_since = Some(now);
        }
        if loss >= LOSS_DOWN_SUSTAINED {
            self.lossy_reports += 1;
        } else {
            self.lossy_reports = 0;
        }
        if loss >= LOSS_DOWN || self.lossy_reports >= 2 {
            if self.probed_at.take().is_some() {
                // The probe failed: wait longer before the next one.
                self.probe_after = (self.probe_after * 2).min(PROBE_AFTER_MAX);
            }
            return Some(Step::Down);
        }
        let clean_for = self
            .clean_since
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        (clean_for >= self.probe_after).then_some(Step::Up)
    }

    /// The subscriber was moved `step` (to a layer that exists): reports start over.
    pub fn moved(&mut self, step: Step, now: Instant) {
        self.lossy_reports = 0;
        self.clean_since = None;
        self.settle_until = Some(now + SETTLE);
        if step == Step::Up {
            self.probed_at = Some(now);
        }
    }

    /// There is no layer to move to that way (already at the top or the bottom).
    pub fn stayed(&mut self, step: Step) {
        if step == Step::Up {
            // At the top with a clean link: nothing to probe.
            self.clean_since = None;
        }
        self.lossy_reports = 0;
    }
}

/// A subscriber's layers: what the room sends, what it follows, what it chose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReport {
    /// Layers still sending, largest first.
    pub layers: Vec<(Rid, Picture)>,
    /// The layer it receives, or the one it is moving to.
    pub following: Option<Rid>,
    pub choice: Choice,
}

impl Core {
    /// Subscriber `session`'s layers; with `choice`, changes its choice first. A chosen
    /// layer is switched to at its next keyframe (asked for now); Auto starts from
    /// the layer followed.
    pub fn layers(
        &mut self,
        session: &str,
        choice: Option<Choice>,
        now: Instant,
    ) -> Result<LayerReport, SessionError> {
        let key = *self
            .by_session
            .get(session)
            .ok_or(SessionError::UnknownSession)?;
        let p = self
            .peers
            .get_mut(&key)
            .ok_or(SessionError::UnknownSession)?;
        let room_id = p.room.clone();
        let PeerRole::Subscriber(sub) = &mut p.role else {
            return Err(SessionError::NotASubscriber);
        };
        let layers = self
            .rooms
            .get(&room_id)
            .map(|r| r.layers.sending(now))
            .unwrap_or_default();
        let mut want = None;
        if let Some(choice) = choice {
            if let Choice::Layer(rid) = choice {
                if !layers.iter().any(|(r, _)| *r == rid) {
                    return Err(SessionError::UnknownLayer(rid.to_string()));
                }
                if sub.gate.layer == Some(rid) {
                    sub.gate.next = None;
                } else if sub.gate.next != Some(rid) {
                    sub.gate.next = Some(rid);
                    want = Some(rid);
                }
            }
            sub.quality = Quality {
                choice,
                ..Quality::default()
            };
        }
        let report = LayerReport {
            layers,
            following: sub.gate.next.or(sub.gate.layer),
            choice: sub.quality.choice,
        };
        if let Some(rid) = want {
            self.counters.layer_switches += 1;
            self.request_keyframe(&room_id, Want::Layer(rid), now);
        }
        Ok(report)
    }

    /// Moves subscriber `key` one layer `step` (Auto) if there is one: it keeps its
    /// layer until the new one's keyframe, which is asked for now.
    pub(super) fn step_layer(&mut self, key: u64, room_id: &str, step: Step, now: Instant) {
        let Some(layers) = self.rooms.get(room_id).map(|r| &r.layers) else {
            return;
        };
        let Some(PeerRole::Subscriber(sub)) = self.peers.get_mut(&key).map(|p| &mut p.role) else {
            return;
        };
        let Some(current) = sub.gate.layer else {
            return;
        };
        match layers.step(current, step, now) {
            Some(next) => {
                sub.gate.next = Some(next);
                sub.quality.moved(step, now);
                self.counters.layer_switches += 1;
                self.request_keyframe(room_id, Want::Layer(next), now);
            }
            None => sub.quality.stayed(step),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(q: &mut Quality, loss: f32, t: &mut Instant, secs: u64) -> Vec<Step> {
        let mut steps = Vec::new();
        for _ in 0..secs {
            *t += Duration::from_secs(1);
            if let Some(s) = q.on_loss(loss, *t) {
                q.moved(s, *t);
                steps.push(s);
            }
        }
        steps
    }

    #[test]
    fn heavy_loss_steps_down_at_once_and_clean_reports_step_back_up() {
        let mut t = Instant::now();
        let mut q = Quality::default();
        assert_eq!(feed(&mut q, 0.0, &mut t, 2), []);
        assert_eq!(
            q.on_loss(0.2, t + Duration::from_millis(1)),
            Some(Step::Down)
        );
        q.moved(Step::Down, t);
        // Reports right after the switch still describe the old layer.
        assert_eq!(q.on_loss(0.2, t + Duration::from_millis(500)), None);
        // Clean for PROBE_AFTER (counted after the settle): up.
        let steps = feed(&mut q, 0.0, &mut t, 8);
        assert_eq!(steps, [Step::Up]);
    }

    #[test]
    fn moderate_loss_moves_down_only_when_it_lasts() {
        let mut t = Instant::now();
        let mut q = Quality::default();
        assert_eq!(feed(&mut q, 0.06, &mut t, 1), []);
        assert_eq!(feed(&mut q, 0.01, &mut t, 1), []);
        assert_eq!(feed(&mut q, 0.06, &mut t, 1), []);
        assert_eq!(feed(&mut q, 0.06, &mut t, 1), [Step::Down]);
    }

    #[test]
    fn failed_probes_back_off_and_a_held_one_resets_the_wait() {
        let mut t = Instant::now();
        let mut q = Quality::default();
        let mut probe_gaps = Vec::new();
        let mut last_up = t;
        // A link that carries the lower layer only: every probe up brings loss.
        for _ in 0..4 {
            let mut secs = 0;
            loop {
                t += Duration::from_secs(1);
                secs += 1;
                if let Some(s) = q.on_loss(0.0, t) {
                    assert_eq!(s, Step::Up);
                    q.moved(s, t);
                    break;
                }
                assert!(secs < 60, "a probe within a minute");
            }
            probe_gaps.push(t.duration_since(last_up).as_secs());
            t += Duration::from_secs(2);
            assert_eq!(q.on_loss(0.3, t), Some(Step::Down));
            q.moved(Step::Down, t);
            last_up = t;
        }
        assert!(
            probe_gaps.windows(2).all(|w| w[1] > w[0]),
            "each failed probe waits longer: {probe_gaps:?}"
        );
        // A probe that holds resets the wait.
        let steps = feed(&mut q, 0.0, &mut t, 60);
        assert_eq!(steps.first(), Some(&Step::Up));
        feed(&mut q, 0.0, &mut t, 10);
        assert_eq!(q.probe_after, PROBE_AFTER);
    }

    #[test]
    fn a_chosen_layer_ignores_loss() {
        let mut q = Quality {
            choice: Choice::Layer(Rid::from("l")),
            ..Quality::default()
        };
        let t = Instant::now();
        assert_eq!(q.on_loss(0.5, t), None);
        assert_eq!(q.on_loss(0.0, t + Duration::from_secs(30)), None);
    }
}
