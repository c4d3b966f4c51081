//! Istio YAML as weftd's directory source and `weft analyze` read it: arbitrary text through
//! `weft_api::parse_file` (multi-document YAML into typed resources), then the analyzer over what parsed,
//! then every diagnostic formatted as it is printed. Nothing may panic: a bad file is a diagnostic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The callers read files with `read_to_string`, so only UTF-8 reaches the parser; a lossy
    // conversion keeps every input useful rather than discarding the ones with a stray byte.
    let text = String::from_utf8_lossy(data);
    let parsed = weft_api::parse_file("fuzz/config.yaml", &text);
    // A document with neither `kind` nor `apiVersion` is a mesh config when the file is named like one:
    // read the same text under that name too, so the mesh config's parsing is covered.
    let mesh = parsed
        .diagnostics
        .iter()
        .any(|d| d.field == "kind" && d.message == "missing kind")
        .then(|| weft_api::parse_file("fuzz/mesh.yaml", &text));
    for p in std::iter::once(&parsed).chain(mesh.as_ref()) {
        let diagnostics = weft_api::analyze(&p.resources);
        for d in p.diagnostics.iter().chain(&diagnostics) {
            std::hint::black_box(d.to_string());
        }
    }
});
