//! A DKIM-signed mail verifies with an independent implementation (mail-auth), the
//! public key served from a fixed TXT record instead of DNS.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::path::Path;
use std::time::Instant;

use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::hickory_resolver::config::{ResolverConfig, ResolverOpts};
use mail_auth::{
    AuthenticatedMessage, DkimResult, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use nurtured::smtp_sink::SmtpSink;

use crate::helpers::{eventually, mail_dir, spawn_in};
use crate::mail::{consenting, mails_to, pricing_view};

/// TXT records by name, never DNS.
struct StaticTxt(HashMap<Box<str>, Txt>);

impl ResolverCache<Box<str>, Txt> for StaticTxt {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.get(name).cloned()
    }
    fn remove<Q>(&self, _: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        None
    }
    fn insert(&self, _: Box<str>, _: Txt, _: Instant) {}
}

async fn verify(raw: &[u8], selector: &str, domain: &str, public_key: &str) -> Vec<DkimResult> {
    let record = format!("v=DKIM1; k=rsa; p={public_key}");
    let key = DomainKey::parse(record.as_bytes()).expect("a DKIM record");
    let name = format!("{selector}._domainkey.{domain}.");
    let cache = StaticTxt(HashMap::from([(name.into_boxed_str(), Txt::from(key))]));
    let auth = MessageAuthenticator::new(
        ResolverConfig::from_parts(None, vec![], vec![]),
        ResolverOpts::default(),
    )
    .expect("resolver without servers");
    let message = AuthenticatedMessage::parse(raw).expect("a parseable message");
    auth.verify_dkim(Parameters::new(&message).with_txt_cache(&cache))
        .await
        .into_iter()
        .map(|o| o.result().clone())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dkim_signed_mail_verifies() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let sink = SmtpSink::start().unwrap();
    let extra = format!(
        "[mail.dkim]\ndomain = \"example.com\"\nselector = \"nurtured\"\nkey_file = \"{}\"\n",
        fixtures.join("dkim-test.pem").display()
    );
    let app = spawn_in(mail_dir(sink.port, &extra)).await;
    let email = "dkim@kunde.example";
    app.post("/v1/identify", &consenting(email, false)).await;
    app.post("/v1/page", &pricing_view(email)).await;
    let mail = eventually("the signed mail", 5, || mails_to(&sink, email).pop()).await;
    let signature = mail.header("DKIM-Signature").expect("signed");
    assert!(signature.contains("d=example.com"), "{signature}");
    assert!(
        signature.contains("list-unsubscribe"),
        "the unsubscribe headers are signed: {signature}"
    );
    let public = std::fs::read_to_string(fixtures.join("dkim-test.pub.b64")).unwrap();
    let public = public.trim();
    assert_eq!(
        verify(&mail.raw, "nurtured", "example.com", public).await,
        vec![DkimResult::Pass]
    );
    // Changed on the way: no longer verifies.
    let tampered = mail.text().replacen("Subject: ", "Subject: RE: ", 1);
    let results = verify(tampered.as_bytes(), "nurtured", "example.com", public).await;
    assert!(!results.contains(&DkimResult::Pass), "{results:?}");
    app.stop().await;
}
