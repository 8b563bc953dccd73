//! Decode arbitrary bytes as a stream of MQTT packets with a small maximum
//! packet size, once as MQTT 3.1.1 and once as MQTT 5.0; every packet that
//! decodes must re-encode to bytes that decode to the same packet.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mqtt::protocol::codec::{
    CodecError, Decoded, PropertiesBuf, ProtocolVersion, decode, decode_as,
};

const MAX_PACKET_SIZE: usize = 1024;

fuzz_target!(|data: &[u8]| {
    // `decode` is the 3.1.1 decoder: it must agree with `decode_as(.., V311)`.
    assert_eq!(
        decode(data, MAX_PACKET_SIZE),
        decode_as(data, MAX_PACKET_SIZE, ProtocolVersion::V311)
    );
    for version in [ProtocolVersion::V311, ProtocolVersion::V5] {
        check_stream(data, version);
    }
});

fn check_stream(data: &[u8], version: ProtocolVersion) {
    let mut rest = data;
    let mut out = Vec::new();
    loop {
        match decode_as(rest, MAX_PACKET_SIZE, version) {
            Ok(Decoded::Packet(packet, used)) => {
                assert!(used >= 2 && used <= rest.len() && used <= MAX_PACKET_SIZE);

                out.clear();
                let written = packet
                    .encode(&mut out)
                    .unwrap_or_else(|e| panic!("re-encoding {packet:?} ({version:?}) failed: {e}"));
                assert_eq!(written, out.len());
                assert_eq!(packet.encoded_len(), Ok(written));
                // The encoder uses the minimal variable byte integers and the
                // shortest MQTT 5 forms (acks, DISCONNECT, AUTH without
                // properties), the input may not, so the re-encoding is never longer.
                assert!(written <= used, "re-encoding grew {used} -> {written}");

                match decode_as(&out, usize::MAX, version) {
                    Ok(Decoded::Packet(again, again_used)) => {
                        assert_eq!(again_used, written);
                        assert_eq!(again, packet);
                    }
                    other => panic!(
                        "re-encoded {packet:?} ({version:?}) as {out:02x?} decodes as {other:?}"
                    ),
                }
                // One byte short of the re-encoded frame is never a packet.
                match decode_as(&out[..written - 1], usize::MAX, version) {
                    Ok(Decoded::Incomplete(n)) => assert!(n >= 1),
                    other => panic!("truncated {out:02x?} decodes as {other:?}"),
                }
                // Decoded properties are valid values: they rebuild one by
                // one into a list that reads back the same.
                if let Some(properties) = packet.properties() {
                    let mut rebuilt = PropertiesBuf::new();
                    for p in properties.iter() {
                        rebuilt
                            .push(p)
                            .unwrap_or_else(|e| panic!("decoded {p:?} does not push: {e}"));
                    }
                    assert!(rebuilt.as_properties().iter().eq(properties.iter()));
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
}
