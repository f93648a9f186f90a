//! SDP parsing and negotiation never panic, whatever the offer.

use proptest::prelude::*;
use switchboard::sip::sdp::{self, Codec};

const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\n\
m=audio 4000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=ptime:20\r\na=sendrecv\r\n";

fn lines() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("v=0".to_string()),
        "c=IN IP[46] [0-9a-f:.]{0,20}",
        "m=(audio|video) [0-9]{0,6}(/[0-9])? RTP/(AVP|SAVP|AVPF) [0-9 ]{0,12}",
        "a=rtpmap:[0-9]{1,3} [A-Za-z0-9-]{0,12}/[0-9]{0,6}(/[0-9])?",
        "a=(sendrecv|sendonly|recvonly|inactive|ptime:[0-9]{0,4})",
        "[a-z]=.{0,30}",
        ".{0,40}",
    ];
    prop::collection::vec(line, 0..14).prop_map(|l| l.join("\r\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(b in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(sd) = sdp::parse(&b) {
            let _ = sdp::negotiate(&sd, &[Codec::Pcmu, Codec::Pcma], 20);
        }
    }

    #[test]
    fn sdp_shaped_text_never_panics_and_answers_reparse(text in lines()) {
        if let Ok(sd) = sdp::parse(text.as_bytes()) {
            if let Ok(n) = sdp::negotiate(&sd, &[Codec::Pcma, Codec::Pcmu], 20) {
                prop_assert!((10..=60).contains(&n.ptime_ms));
                let ans = sdp::build_answer(&sd, &n, "192.0.2.1:30000".parse().unwrap(), sdp::Origin { session_id: 1, version: 1 });
                let back = sdp::parse(ans.as_bytes()).expect("our answer parses");
                prop_assert_eq!(back.media.len(), sd.media.len(), "one answer m-line per offer m-line");
            }
        }
    }

    #[test]
    fn mutated_offer_never_panics(pos in 0usize..OFFER.len(), byte in any::<u8>(), cut in 0usize..OFFER.len()) {
        let mut b = OFFER.as_bytes().to_vec();
        b[pos] = byte;
        let _ = sdp::parse(&b).map(|sd| sdp::negotiate(&sd, &[Codec::Pcmu], 20));
        let _ = sdp::parse(&OFFER.as_bytes()[..cut]).map(|sd| sdp::negotiate(&sd, &[Codec::Pcmu], 20));
    }
}
