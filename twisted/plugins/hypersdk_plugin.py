from twisted.application.service import ServiceMaker

hypersdk = ServiceMaker("hypersdk", "hypersdk.tap", "VMware vSphere to KVM migration daemon (REST API).", "hypersdk")
