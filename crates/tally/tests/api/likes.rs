//! The like path: exact counts and dedup under concurrency.

use std::collections::HashSet;

use futures::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, TestUser, answer, assert_error};

backend_tests!(
    like_answers_the_count_after_the_operation,
    thousand_users_like_one_post_concurrently,
    one_user_hammering_one_post_counts_once,
    one_user_mixed_operations_stay_consistent,
    likers_are_listed_newest_first,
    likes_on_unknown_posts_are_not_found,
    likes_survive_a_restart,
);

async fn like_answers_the_count_after_the_operation(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(6).await;
    let post = app.post(&users[0]).await;
    for (i, u) in users[..5].iter().enumerate() {
        assert_eq!(answer(app.like(u, post).await).await, (true, i as i64 + 1));
    }
    // Count 5, the sixth user likes: the answer says 6.
    assert_eq!(answer(app.like(&users[5], post).await).await, (true, 6));
    // Idempotent: a repeated like changes nothing.
    assert_eq!(answer(app.like(&users[5], post).await).await, (true, 6));
    assert_eq!(answer(app.unlike(&users[5], post).await).await, (false, 5));
    assert_eq!(answer(app.unlike(&users[5], post).await).await, (false, 5));
    assert_eq!(answer(app.toggle(&users[5], post).await).await, (true, 6));
    assert_eq!(answer(app.toggle(&users[5], post).await).await, (false, 5));

    let seen = app.get_post(Some(&users[0]), post).await;
    assert_eq!(
        (seen["likeCount"].as_i64(), seen["likedByMe"].as_bool()),
        (Some(5), Some(true))
    );
    let seen = app.get_post(Some(&users[5]), post).await;
    assert_eq!(seen["likedByMe"], false);
}

async fn thousand_users_like_one_post_concurrently(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(1000).await;
    let post = app.post(&users[0]).await;
    let answers = join_all(
        users
            .iter()
            .map(|u| async { answer(app.like(u, post).await).await }),
    )
    .await;
    // Each like changed the count by one and answered the count right
    // after it: the answers are exactly 1..=1000, each once.
    let counts: HashSet<i64> = answers
        .iter()
        .map(|&(liked, count)| {
            assert!(liked);
            count
        })
        .collect();
    assert_eq!(counts, (1..=1000).collect::<HashSet<_>>());
    assert_eq!(app.get_post(None, post).await["likeCount"], 1000);
    let likers = app.all_likers(post).await;
    assert_eq!(likers.len(), 1000);
    let ids: HashSet<i64> = likers.iter().map(|l| l["id"].as_i64().unwrap()).collect();
    assert_eq!(ids, users.iter().map(|u| u.id).collect::<HashSet<_>>());
}

async fn one_user_hammering_one_post_counts_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("hammer").await;
    let post = app.post(&user).await;
    let answers =
        join_all((0..100).map(|_| async { answer(app.like(&user, post).await).await })).await;
    assert!(answers.iter().all(|&a| a == (true, 1)), "{answers:?}");
    assert_eq!(app.get_post(None, post).await["likeCount"], 1);
    assert_eq!(app.all_likers(post).await.len(), 1);
}

async fn one_user_mixed_operations_stay_consistent(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let [user, other]: [TestUser; 2] = app.seed_users(2).await.try_into().unwrap();
    let post = app.post(&other).await;
    let answers = join_all((0..100).map(|i| {
        let (app, user) = (&app, &user);
        async move {
            let r = match i % 3 {
                0 => app.like(user, post).await,
                1 => app.unlike(user, post).await,
                _ => app.toggle(user, post).await,
            };
            answer(r).await
        }
    }))
    .await;
    // One user on the post: every answer's count is 1 exactly when it says liked.
    for (liked, count) in &answers {
        assert_eq!(*count, i64::from(*liked), "{answers:?}");
    }
    let seen = app.get_post(Some(&user), post).await;
    let final_count = seen["likeCount"].as_i64().unwrap();
    assert!(final_count == 0 || final_count == 1);
    assert_eq!(seen["likedByMe"].as_bool().unwrap(), final_count == 1);
    assert_eq!(app.all_likers(post).await.len() as i64, final_count);
}

async fn likers_are_listed_newest_first(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(5).await;
    let post = app.post(&users[0]).await;
    for u in &users {
        app.like(u, post).await;
        // Distinct timestamps make the expected order unambiguous.
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    }
    app.unlike(&users[2], post).await;
    app.drain().await;
    let r: Value = app
        .get_json(&format!("/v1/posts/{post}/likers?limit=2"))
        .await;
    assert_eq!(r["items"].as_array().unwrap().len(), 2);
    assert_eq!(r["items"][0]["username"], "seed_4");
    assert!(r["items"][0]["likedAt"].as_str().unwrap().ends_with('Z'));
    let all: Vec<i64> = app
        .all_likers(post)
        .await
        .iter()
        .map(|l| l["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        all,
        vec![users[4].id, users[3].id, users[1].id, users[0].id]
    );
}

async fn likes_on_unknown_posts_are_not_found(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let user = app.user("lost").await;
    assert_error(
        app.like(&user, 12345).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.unlike(&user, 12345).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    assert_error(
        app.toggle(&user, 12345).await,
        StatusCode::NOT_FOUND,
        "not_found",
    )
    .await;
    let r = app
        .like_op(
            reqwest::Method::PUT,
            "/v1/posts/not-a-number/like",
            &user.token,
        )
        .await;
    assert_error(r, StatusCode::BAD_REQUEST, "invalid_request").await;
}

async fn likes_survive_a_restart(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let users = app.seed_users(30).await;
    let post = app.post(&users[0]).await;
    for r in join_all(users.iter().map(|u| app.like(u, post))).await {
        assert_eq!(r.status(), StatusCode::OK);
    }
    for r in join_all(users[..10].iter().map(|u| app.unlike(u, post))).await {
        assert_eq!(r.status(), StatusCode::OK);
    }
    let app = app.restart().await;
    let seen = app.get_post(Some(&users[29]), post).await;
    assert_eq!(seen["likeCount"], 20);
    assert_eq!(seen["likedByMe"], true);
    assert_eq!(
        app.get_post(Some(&users[0]), post).await["likedByMe"],
        false
    );
    assert_eq!(app.all_likers(post).await.len(), 20);
}
