//! The IR dump shown in the README is the real one.
mod common;
use common::*;

#[test]
fn readme_dump_example_is_current() {
    let i = inputs(&[("I", rand(&[5], 1)), ("W", rand(&[3], 2))]);
    let got = dump("O[i] = I[i+rx-1] * W[rx] where i in 0..5", &i);
    let readme = include_str!("../README.md");
    let start = readme
        .find("# statement 1: O[i] = I[i+rx-1]")
        .expect("README shows the dump");
    let end = start + readme[start..].find("```").unwrap();
    assert_eq!(readme[start..end].trim_end(), got.trim_end());
}
