#include "job.h"

namespace perceptual {

Job::Job(Napi::Env env, std::function<Finish()> run)
    : Napi::AsyncWorker(env, "generic-perceptual-loss"),
      deferred_(Napi::Promise::Deferred::New(env)),
      run_(std::move(run)) {}

// While a worker_thread is terminated, its environment can no longer run
// JavaScript: the HandleScope that node-addon-api opens here throws, out of a C
// callback (std::terminate). No one is left to resolve the promise for, so the
// result is dropped.
void Job::OnWorkComplete(Napi::Env env, napi_status status) {
  try {
    Napi::AsyncWorker::OnWorkComplete(env, status);  // resolves or rejects, then deletes this
  } catch (...) {
    delete this;
  }
}

void Job::Execute() {
  try {
    ops::InferenceGuard inference;
    ops::initThreadsHere();  // pick up setNumThreads() on this pool thread
    finish_ = run_();
  } catch (...) {
    failure_ = describe(std::current_exception());
    failed_ = true;
  }
  run_ = nullptr;  // drop captured tensors on the worker, not later
}

void Job::OnOK() {
  Napi::Env env = Env();
  Napi::HandleScope scope(env);
  if (failed_) {
    deferred_.Reject(makeError(env, failure_));
    return;
  }
  try {
    ops::InferenceGuard inference;
    deferred_.Resolve(finish_(env));
  } catch (const Napi::Error& e) {
    deferred_.Reject(e.Value());
  } catch (...) {
    deferred_.Reject(makeError(env, describe(std::current_exception())));
  }
  finish_ = nullptr;
}

Napi::Promise queue(Napi::Env env, std::function<Job::Finish()> run) {
  auto* job = new Job(env, std::move(run));
  Napi::Promise promise = job->promise();
  job->Queue();
  return promise;
}

}  // namespace perceptual
