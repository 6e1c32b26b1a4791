// The API document's JavaScript example, as written there, with its `...` filled in:
// the job comes from HYPERSDK_JOB (JSON) and the daemon's address from HYPERSDK_URL.
// Around it only what Node needs to run it: the `ws` package as WebSocket, an async
// wrapper for its top-level await, and an exit once the job has ended.
const WebSocket = require('ws');
const base = process.env.HYPERSDK_URL;            // "http://localhost:8080" in the document
const job = JSON.parse(process.env.HYPERSDK_JOB);

async function main() {
  // Using axios
  const axios = require('axios');

  // Submit job
  const response = await axios.post(`${base}/jobs/submit`, {
    vm_path: job.vm_path,
    source: {type: 'vsphere', ...job.source},
    destination: {type: 'kvm', ...job.destination},
    options: job.options,
  });

  const jobId = response.data.job_id;

  // Connect WebSocket for real-time updates
  const ws = new WebSocket(`${base.replace('http', 'ws')}/ws`);
  ws.onmessage = (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === 'job_update' &&
        msg.data.definition.id === jobId) {
      console.log('Progress:', msg.data.progress.percent_complete + '%');
    }
  };

  // Not in the document: end when the job does.
  ws.addEventListener('message', (event) => {
    const msg = JSON.parse(event.data);
    if (msg.type === 'job_update' && msg.data.definition.id === jobId &&
        ['completed', 'failed', 'cancelled'].includes(msg.data.status)) {
      console.log('Final:', msg.data.status);
      ws.close();
    }
  });
}

main().catch((error) => { console.error(String(error)); process.exit(1); });
