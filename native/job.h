// An async job: `run` on a libuv pool thread, `finish` back on the JS thread,
// settling a promise.
#pragma once

#include <napi.h>

#include <functional>

#include "errors.h"

namespace perceptual {

class Job : public Napi::AsyncWorker {
 public:
  using Finish = std::function<Napi::Value(Napi::Env)>;

  Job(Napi::Env env, std::function<Finish()> run);

  Napi::Promise promise() const { return deferred_.Promise(); }

  void OnWorkComplete(Napi::Env env, napi_status status) override;
  void Execute() override;
  void OnOK() override;

 private:
  Napi::Promise::Deferred deferred_;
  std::function<Finish()> run_;
  Finish finish_;
  Failure failure_{ErrorCode::Libtorch, ""};
  bool failed_ = false;
};

// Queues `run`; the promise settles with what the Finish it returns makes of
// its results.
Napi::Promise queue(Napi::Env env, std::function<Job::Finish()> run);

}  // namespace perceptual
