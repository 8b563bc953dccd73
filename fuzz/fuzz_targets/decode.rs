//! Decode arbitrary bytes as a stream of MQTT packets with a small maximum
//! packet size; every packet that decodes must re-encode to bytes that decode
//! to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt::protocol::codec::{CodecError, Decoded, decode};

const MAX_PACKET_SIZE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let mut out = Vec::new();
    loop {
        match decode(rest, MAX_PACKET_SIZE) {
            Ok(Decoded::Packet(packet, used)) => {
                assert!(used >= 2 && used <= rest.len() && used <= MAX_PACKET_SIZE);

                out.clear();
                let written = packet
                    .encode(&mut out)
                    .unwrap_or_else(|e| panic!("re-encoding {packet:?} failed: {e}"));
                assert_eq!(written, out.len());
                assert_eq!(packet.encoded_len(), Ok(written));
                // The encoder uses the minimal remaining-length encoding, the
                // input may not, so the re-encoding is never longer.
                assert!(written <= used, "re-encoding grew {used} -> {written}");

                match decode(&out, usize::MAX) {
                    Ok(Decoded::Packet(again, again_used)) => {
                        assert_eq!(again_used, written);
                        assert_eq!(again, packet);
                    }
                    other => panic!("re-encoded {packet:?} as {out:02x?} decodes as {other:?}"),
                }
                // One byte short of the re-encoded frame is never a packet.
                match decode(&out[..written - 1], usize::MAX) {
                    Ok(Decoded::Incomplete(n)) => assert!(n >= 1),
                    other => panic!("truncated {out:02x?} decodes as {other:?}"),
                }
                rest = &rest[used..];
            }
            Ok(Decoded::Incomplete(n)) => {
                assert!(n >= 1);
                break;
            }
            Err(CodecError::PacketTooLarge { size, max }) => {
                assert!(size > max && max == MAX_PACKET_SIZE);
                break;
            }
            Err(_) => break,
        }
    }
});
