//! Any text given to the invitation parser (what a QR code scan yields)
//! gives an invitation or an error, never a panic; a parsed invitation
//! prints back to text that parses to the same invitation.
#![no_main]

use confidant_actors::Invitation;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(invitation) = Invitation::from_text(text) else {
        return;
    };
    let again = Invitation::from_text(&invitation.to_text()).unwrap();
    assert_eq!(again, invitation);
});
