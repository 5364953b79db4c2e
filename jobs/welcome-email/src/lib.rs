//! The handler of queue `welcome-email`: renders a welcome email from
//! templates (with minijinja, compiled into the module) and dispatches it to
//! queue `send-email` for delivery.
//!
//! ```text
//! runtime dispatch welcome-email '{"to": "ada@example.com", "name": "Ada", "product": "Acme"}'
//! ```
//!
//! Delivery is another queue's job so that a slow or failing mail server
//! retries the delivery alone, not the rendering. The follow-up carries a
//! unique key, so a retried render does not queue a second email while the
//! first is still waiting.

use guest_sdk::{DispatchOptions, Job, info};
use minijinja::{Environment, context};
use serde::{Deserialize, Serialize};

const SUBJECT: &str = "Welcome to {{ product }}, {{ name }}!";

const TEXT: &str = "\
Hi {{ name }},

Thanks for signing up for {{ product }}.
{% if verify_url %}Please confirm your address: {{ verify_url }}
{% endif %}
-- The {{ product }} team
";

const HTML: &str = "\
<p>Hi {{ name }},</p>
<p>Thanks for signing up for <strong>{{ product }}</strong>.</p>
{% if verify_url %}<p><a href=\"{{ verify_url }}\">Confirm your address</a></p>{% endif %}
<p>&mdash; The {{ product }} team</p>
";

#[derive(Deserialize)]
struct Welcome {
    to: String,
    name: String,
    product: String,
    #[serde(default)]
    verify_url: Option<String>,
}

/// The payload of a `send-email` job.
#[derive(Serialize)]
struct Email {
    to: String,
    subject: String,
    text: String,
    html: String,
}

fn handle(job: Job<Welcome>) -> guest_sdk::Result {
    let w = job.payload;
    if !plausible_address(&w.to) {
        return Err(guest_sdk::fail(format!("not an email address: {:?}", w.to)));
    }
    let mut env = Environment::new();
    // Escape HTML only in the HTML body: names are user input.
    env.set_auto_escape_callback(|name| {
        if name == "html" {
            minijinja::AutoEscape::Html
        } else {
            minijinja::AutoEscape::None
        }
    });
    env.add_template("subject", SUBJECT)?;
    env.add_template("text", TEXT)?;
    env.add_template("html", HTML)?;
    let ctx = context! { name => w.name, product => w.product, verify_url => w.verify_url };
    let email = Email {
        subject: env.get_template("subject")?.render(&ctx)?,
        text: env.get_template("text")?.render(&ctx)?,
        html: env.get_template("html")?.render(&ctx)?,
        to: w.to,
    };
    let options = DispatchOptions::new().unique_key(format!("welcome:{}", email.to));
    let id = guest_sdk::dispatch_with("send-email", &email, options)?;
    info!("rendered {:?} for {}; delivery is job {id}", email.subject, email.to);
    Ok(())
}

/// One `@`, something before it, a dot somewhere after it.
fn plausible_address(to: &str) -> bool {
    match to.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.contains('@') && !to.contains(char::is_whitespace)
        }
        None => false,
    }
}

guest_sdk::export_handler!(handle);
