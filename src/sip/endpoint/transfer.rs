//! Blind transfer (RFC 3515): we REFER the caller to a target and follow the implicit
//! subscription's NOTIFYs (message/sipfrag, RFC 3420). When the target answers we hang up;
//! when the peer refuses the REFER or the target does not answer, the call goes on and the
//! driver hears why (`Event::Transfer`), so the agent can say so instead of leaving dead air.

use super::call::{Phase, Refer};
use super::txn::TxKey;
use super::types::{CallKey, EndReason, Event, TransferProgress};
use super::{Endpoint, ReqCtx};
use crate::sip::message::{parse_start_line, Method, StartLine};
use std::time::Instant;
use tracing::{info, warn};

impl Endpoint {
    /// Ask the caller's side to call `target` (a SIP URI) in our place. Progress comes as
    /// `Event::Transfer`; a call that is not up, or one already being transferred, fails at once.
    pub fn transfer(&mut self, key: CallKey, target: &str, now: Instant) {
        let refusal = match self.calls.get(&key) {
            None => return,
            Some(c) if c.phase != Phase::Confirmed => Some("the call is not up"),
            Some(c) if c.refer.is_some() => Some("a transfer is already in progress"),
            Some(_) if crate::sip::message::SipUri::parse(target).is_none() => Some("the target is not a SIP URI"),
            Some(_) => None,
        };
        if let Some(reason) = refusal {
            warn!(key = %key, target, reason, "transfer not started");
            self.events.push_back(Event::Transfer {
                key,
                progress: TransferProgress::Failed { code: 491, reason: reason.into() },
            });
            return;
        }
        let Some(c) = self.calls.get(&key) else { return };
        info!(call_id = %c.call_id, key = %key, target, "sending REFER");
        let contact = c.contact.clone();
        let referred_by = contact.clone();
        let refer_to = format!("<{target}>");
        self.send_in_dialog(key, Method::Refer, now, |m| {
            m.headers.push("Refer-To", refer_to);
            m.headers.push("Referred-By", referred_by);
            // REFER is a target refresh request (RFC 3515 §2.4.1): it carries our Contact.
            m.headers.push("Contact", contact);
        });
        if let Some(c) = self.calls.get_mut(&key) {
            c.refer = Some(Refer { target: target.to_string() });
        }
    }

    /// The final response to our REFER (or 408 when none came).
    pub(super) fn refer_answered(&mut self, key: CallKey, code: u16, reason: &str) {
        let Some(c) = self.calls.get_mut(&key) else { return };
        let Some(refer) = &c.refer else { return };
        let progress = if (200..300).contains(&code) {
            info!(call_id = %c.call_id, key = %key, code, "REFER accepted");
            TransferProgress::Accepted
        } else {
            warn!(call_id = %c.call_id, key = %key, code, reason, target = %refer.target, "REFER refused");
            c.refer = None;
            TransferProgress::Failed { code, reason: reason.to_string() }
        };
        self.events.push_back(Event::Transfer { key, progress });
    }

    /// A NOTIFY in the call's dialog: the refer subscription's progress, else 481 (RFC 6665 §4.1.3).
    pub(super) fn handle_notify(&mut self, ctx: ReqCtx, key: TxKey, ck: CallKey, now: Instant) {
        let event =
            ctx.req.headers.get("Event").unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        let subscribed = self.calls.get(&ck).is_some_and(|c| c.refer.is_some());
        if event != "refer" || !subscribed {
            self.respond_reason_tx(key, &ctx, 481, "Subscription Does Not Exist", now);
            return;
        }
        let frag = String::from_utf8_lossy(&ctx.req.body);
        let status = frag.lines().next().and_then(parse_start_line).and_then(|l| match l {
            StartLine::Response { code, reason } => Some((code, reason)),
            StartLine::Request { .. } => None,
        });
        let terminated = ctx
            .req
            .headers
            .get("Subscription-State")
            .is_some_and(|s| s.trim().to_ascii_lowercase().starts_with("terminated"));
        self.respond_tx(key, &ctx, 200, None, now, |_| {});
        let progress = match status {
            Some((code, _)) if code < 200 && !terminated => TransferProgress::Trying(code),
            Some((code, _)) if (200..300).contains(&code) => TransferProgress::Succeeded,
            Some((code, reason)) if code >= 300 => TransferProgress::Failed { code, reason },
            // A subscription ended without a final answer from the target (RFC 3515 §2.4.7).
            _ if terminated => {
                TransferProgress::Failed { code: 487, reason: "the transfer ended without an answer".into() }
            }
            // A NOTIFY without a readable sipfrag says nothing yet.
            _ => return,
        };
        let done = !matches!(progress, TransferProgress::Trying(_));
        if done {
            if let Some(c) = self.calls.get_mut(&ck) {
                c.refer = None;
            }
        }
        let succeeded = progress == TransferProgress::Succeeded;
        self.events.push_back(Event::Transfer { key: ck, progress });
        if succeeded {
            // Blind transfer: the caller is with the target now; our leg ends.
            self.send_bye(ck, "transferred", now);
            self.end_call(ck, EndReason::Transferred);
        }
    }
}
