//! Unit tests of wake-one dispatch: classes, wake-ups passed on, hand-over reservations.

use super::*;

fn shape(agent: &str, labels: &[(&str, &str)]) -> Shape {
    Shape {
        agent: Some(agent.into()),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        project: None,
    }
}

fn of_project(project: &str) -> Shape {
    Shape {
        project: Some(project.into()),
        ..shape("command", &[])
    }
}

fn labels(l: &[(&str, &str)]) -> Labels {
    l.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

const NOW: Duration = Duration::from_millis(0);

fn ho() -> HandOff {
    HandOff {
        worker: WorkerId::parse("w").unwrap(),
        lease_ttl: Duration::from_secs(30),
    }
}

struct Nobody;

impl GiveBack for Nobody {
    fn give_back_later(&self, _: Vec<(WorkerId, Lease)>) -> crate::futures_like::BoxFuture {
        crate::futures_like::ready()
    }
}

fn nobody() -> Returner {
    Returner(Arc::new(Nobody))
}

/// A command task with no labels and no project.
fn any_command() -> Shape {
    shape("command", &[])
}

/// Whether a wait that does not block was handed a wake-up.
async fn woke(w: &mut ClaimWaiter) -> bool {
    matches!(w.wait(NOW).await, Wake::Claim)
}

#[tokio::test]
async fn one_task_wakes_one_waiter_of_each_class_that_can_run_it() {
    let d = Dispatch::default();
    let mut a: Vec<_> = (0..5)
        .map(|_| d.waiter(&["command".into()], &Labels::new(), &[], ho(), nobody()))
        .collect();
    let mut gpu: Vec<_> = (0..3)
        .map(|_| {
            d.waiter(
                &["codex".into(), "command".into()],
                &labels(&[("gpu", "1")]),
                &[],
                ho(),
                nobody(),
            )
        })
        .collect();
    d.wake(&Scope::Shapes(vec![shape("codex", &[])]), 1);
    let woken_a = futures_count(&mut a).await;
    let woken_gpu = futures_count(&mut gpu).await;
    assert_eq!((woken_a, woken_gpu), (0, 1));
    d.wake(&Scope::Shapes(vec![shape("command", &[])]), 2);
    assert_eq!(futures_count(&mut a).await, 2);
    assert_eq!(futures_count(&mut gpu).await, 2);
    d.wake(&Scope::Any, u32::MAX);
    assert_eq!(futures_count(&mut a).await, 5);
    assert_eq!(futures_count(&mut gpu).await, 3);
    assert_eq!(d.idle_count(), 8);
}

#[tokio::test]
async fn a_task_of_a_project_wakes_and_is_reserved_for_workers_that_take_its_project() {
    let d = Dispatch::default();
    let cmd = || vec!["command".to_string()];
    let mut web = vec![d.waiter(&cmd(), &Labels::new(), &["web".into()], ho(), nobody())];
    let mut web_docs = vec![d.waiter(
        &cmd(),
        &Labels::new(),
        &["docs".into(), "web".into()],
        ho(),
        nobody(),
    )];
    let mut any = vec![d.waiter(&cmd(), &Labels::new(), &[], ho(), nobody())];
    // The same projects in another order make the same class.
    let mut docs_web = vec![d.waiter(
        &cmd(),
        &Labels::new(),
        &["web".into(), "docs".into()],
        ho(),
        nobody(),
    )];
    assert_eq!(d.lock().classes.len(), 3);
    d.wake(&Scope::Shapes(vec![of_project("api")]), 1);
    assert_eq!(futures_count(&mut web).await, 0);
    assert_eq!(
        futures_count(&mut web_docs).await + futures_count(&mut docs_web).await,
        0
    );
    assert_eq!(futures_count(&mut any).await, 1);
    // A task of no project is for unlimited workers only.
    d.wake(&Scope::Shapes(vec![shape("command", &[])]), 1);
    assert_eq!(futures_count(&mut web).await, 0);
    assert_eq!(futures_count(&mut any).await, 1);
    d.wake(&Scope::Shapes(vec![of_project("docs")]), 2);
    assert_eq!(futures_count(&mut web).await, 0);
    assert_eq!(
        futures_count(&mut web_docs).await + futures_count(&mut docs_web).await,
        2
    );
    assert_eq!(futures_count(&mut any).await, 1);

    // Hand-over: only a parked waiter that takes the project is reserved.
    let mut w = web.pop().unwrap();
    drop((web_docs, docs_web, any));
    let mut wait = Box::pin(w.wait(Duration::from_secs(600)));
    assert!(futures_poll(wait.as_mut()).await.is_none(), "parks");
    assert!(d.reserve(&of_project("api")).is_none());
    assert!(d.reserve(&shape("command", &[])).is_none());
    assert!(d.reserve(&of_project("web")).is_some());
}

async fn futures_count(ws: &mut [ClaimWaiter]) -> usize {
    let mut n = 0;
    for w in ws {
        if woke(w).await {
            n += 1;
        }
    }
    n
}

#[tokio::test]
async fn an_unused_wake_up_is_passed_on_when_the_waiter_leaves() {
    let d = Dispatch::default();
    let first = d.waiter(&["command".into()], &Labels::new(), &[], ho(), nobody());
    let mut second = d.waiter(&["command".into()], &Labels::new(), &[], ho(), nobody());
    d.wake(&Scope::Any, 1);
    // The longest-waiting one got it; it leaves without claiming (its poll ended).
    assert!(!woke(&mut second).await);
    drop(first);
    assert!(
        woke(&mut second).await,
        "the wake-up was lost with the leaving waiter"
    );
    // A claim that came back full passes one on as well.
    let third = d.waiter(&["command".into()], &Labels::new(), &[], ho(), nobody());
    third.finish(true);
    assert!(woke(&mut second).await);
    let fourth = d.waiter(&["command".into()], &Labels::new(), &[], ho(), nobody());
    fourth.finish(false);
    assert!(!woke(&mut second).await);
    drop(second);
    assert_eq!(d.idle_count(), 0);
    assert!(d.lock().classes.is_empty());
}

#[tokio::test]
async fn only_a_parked_waiter_is_reserved_and_a_release_makes_it_claim() {
    let d = Dispatch::default();
    let mut w = d.waiter(&["command".into()], &Labels::new(), &[], ho(), nobody());
    // Registered but claiming (not inside `wait`): nothing to hand over to.
    assert!(d.reserve(&any_command()).is_none());
    let mut wait = Box::pin(w.wait(Duration::from_secs(600)));
    assert!(futures_poll(wait.as_mut()).await.is_none(), "parks");
    let r = d.reserve(&any_command()).expect("a parked waiter");
    assert_eq!(r.to, ho());
    // Reserved: neither reserved again nor woken by other work.
    assert!(d.reserve(&any_command()).is_none());
    d.wake(&Scope::Any, u32::MAX);
    assert!(futures_poll(wait.as_mut()).await.is_none());
    d.release(r.member);
    assert!(matches!(wait.await, Wake::Claim));
    assert_eq!(d.idle_count(), 1);
}

#[tokio::test]
async fn a_timed_out_wait_stays_for_the_enqueue_that_reserved_it() {
    let d = Dispatch::default();
    let mut w = d.waiter(&["command".into()], &Labels::new(), &[], ho(), nobody());
    let mut wait = Box::pin(w.wait(Duration::from_millis(1)));
    assert!(futures_poll(wait.as_mut()).await.is_none());
    let r = d.reserve(&any_command()).expect("a parked waiter");
    let release = async {
        // Past the wait's own timeout: it must still be there for the outcome.
        tokio::time::sleep(Duration::from_millis(20)).await;
        d.release(r.member);
    };
    let (wake, ()) = tokio::join!(wait, release);
    assert!(matches!(wake, Wake::Claim));
}

/// Poll `f` once: its output if it is ready.
async fn futures_poll<F: std::future::Future + Unpin>(mut f: F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut f).poll(cx) {
            std::task::Poll::Ready(o) => Some(o),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

/// A task that names no agent is handed only to a waiter that offers an agent other than
/// `command`.
#[tokio::test]
async fn a_task_of_no_agent_is_handed_to_an_agent_worker_only() {
    let no_agent = Shape {
        agent: None,
        labels: Labels::new(),
        project: None,
    };
    let d = Dispatch::default();
    let mut commands = d.waiter(&["command".into()], &Labels::new(), &[], ho(), nobody());
    let mut wait = Box::pin(commands.wait(Duration::from_secs(60)));
    assert!(futures_poll(wait.as_mut()).await.is_none());
    assert!(d.reserve(&no_agent).is_none(), "a command-only waiter");
    let mut agents = d.waiter(
        &["command".into(), "codex".into()],
        &Labels::new(),
        &[],
        ho(),
        nobody(),
    );
    let mut other = Box::pin(agents.wait(Duration::from_secs(60)));
    assert!(futures_poll(other.as_mut()).await.is_none());
    assert!(d.reserve(&no_agent).is_some(), "a waiter that offers codex");
}
